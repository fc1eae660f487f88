"""Several ext_proc processes behind one Envoy (`serve --workers N`, `up --workers N`).

`supervisor.WorkerPool` starts and supervises the worker processes (`worker.py`), drives their config
reloads and merges their metrics (`merge.py`); `control.py` is the channel between them. How a request's
streams stay on the worker that holds its state is `plano_extproc.contract`'s WORKER_HEADER and the
bootstrap's per-worker filter copies (bootstrap/filters.py, README "Several worker processes").
"""
