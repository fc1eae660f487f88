{{/*
The pieces of a plano pod: used by this chart's gateway Deployment and, in sidecar mode, by other charts:

  initContainers:
    {{- include "plano-extproc.sidecarInitContainers" $plano | nindent 8 }}
  containers:
    - name: my-app            # calls http://127.0.0.1:<envoy.port>/v1/...
    {{- include "plano-extproc.sidecarContainers" $plano | nindent 8 }}
  volumes:
    {{- include "plano-extproc.sidecarVolumes" $plano | nindent 8 }}
  metadata.annotations:
    {{- include "plano-extproc.sidecarPodAnnotations" $plano | nindent 8 }}

where $plano is (dict "Values" .Values.plano "Release" .Release) — .Values.plano being this chart's values
(a dependency with `alias: plano`). Container, port and volume names all start with plano- / envoy.
*/}}

{{- define "plano-extproc.initContainers" -}}
- name: plano-render-envoy
  image: {{ include "plano-extproc.image" .Values.image | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  # the Envoy bootstrap for exactly this config (keys are never read: render-envoy does not resolve them)
  command: [plano-extproc, render-envoy]
  args:
    - --config
    - /etc/plano/config.yaml
    - --extproc
    - {{ include "plano-extproc.socketAddress" . | quote }}
    - --admin-port
    - {{ .Values.envoy.adminPort | int | quote }}
    - --port
    - {{ .Values.envoy.port | int | quote }}
    - --probe-port
    - {{ .Values.envoy.probePort | int | quote }}
    - --workers
    - {{ .Values.extproc.workers | int | quote }}
    - -o
    - {{ include "plano-extproc.bootstrapPath" . }}
  resources:
    requests: {cpu: 50m, memory: 64Mi}
    limits: {memory: 256Mi}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: plano-config, mountPath: /etc/plano, readOnly: true}
    - {name: plano-envoy, mountPath: /etc/envoy}
{{- end -}}

{{- define "plano-extproc.containers" -}}
- name: envoy
  image: {{ include "plano-extproc.image" .Values.envoy.image | quote }}
  imagePullPolicy: {{ .Values.envoy.image.pullPolicy }}
  command: [envoy]
  args:
    - --config-path
    - {{ include "plano-extproc.bootstrapPath" . }}
    - --concurrency
    - {{ .Values.envoy.concurrency | int | quote }}
    - --log-level
    - {{ .Values.envoy.logLevel | quote }}
    - --disable-hot-restart
    {{- range .Values.envoy.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - {name: plano-http, containerPort: {{ .Values.envoy.port | int }}, protocol: TCP}
    - {name: plano-probes, containerPort: {{ .Values.envoy.probePort | int }}, protocol: TCP}
  startupProbe:
    {{- toYaml .Values.envoy.startupProbe | nindent 4 }}
  readinessProbe:
    {{- toYaml .Values.envoy.readinessProbe | nindent 4 }}
  livenessProbe:
    {{- toYaml .Values.envoy.livenessProbe | nindent 4 }}
  {{- if .Values.envoy.preStopSleepSeconds }}
  lifecycle:
    preStop:
      sleep: {seconds: {{ .Values.envoy.preStopSleepSeconds | int }}}
  {{- end }}
  resources:
    {{- toYaml .Values.envoy.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: plano-envoy, mountPath: /etc/envoy, readOnly: true}
    - {name: plano-run, mountPath: {{ .Values.extproc.socketDir }}}
- name: plano-extproc
  image: {{ include "plano-extproc.image" .Values.image | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [plano-extproc, serve]
  args:
    - --config
    - /etc/plano/config.yaml
    - --listen
    - {{ include "plano-extproc.socketAddress" . | quote }}
    - --metrics
    - {{ printf "0.0.0.0:%d" (.Values.extproc.metricsPort | int) | quote }}
    - --log-level
    - {{ .Values.extproc.logLevel | quote }}
    - --log-format
    - {{ .Values.extproc.logFormat | quote }}
    {{- if gt (.Values.extproc.workers | int) 1 }}
    # a supervisor of N worker processes: restarts a crashed one in place, serves their merged metrics
    - --workers
    - {{ .Values.extproc.workers | int | quote }}
    # the root filesystem is read-only: the supervisor's private directory goes on the shared emptyDir
    - --work-dir
    - {{ .Values.extproc.socketDir | quote }}
    {{- if .Values.extproc.workerMaxRssMib }}
    # a worker past this is drained and replaced in place (its probes ask for the process, not for traffic)
    - --worker-max-rss-mib
    - {{ .Values.extproc.workerMaxRssMib | int | quote }}
    {{- end }}
    {{- else if .Values.extproc.workerMaxRssMib }}
    {{- fail "extproc.workerMaxRssMib needs extproc.workers 2 or more: a worker is replaced only while another serves" }}
    {{- end }}
    # a config change rolls the pods (checksum/plano-config): the mounted file is not watched in place
    - --watch-interval
    - "0"
    {{- if .Values.extproc.logPrompts }}
    - --log-prompts
    {{- end }}
    {{- range .Values.extproc.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: PLANO_HEALTH_TARGET
      value: {{ include "plano-extproc.healthTargets" . | quote }}
    {{- range $name, $ref := .Values.providerKeys.secretKeyRefs }}
    - name: {{ $name }}
      valueFrom:
        secretKeyRef: {name: {{ $ref.name | quote }}, key: {{ $ref.key | quote }}}
    {{- end }}
    {{- with .Values.extproc.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or .Values.providerKeys.existingSecrets .Values.providerKeys.values }}
  envFrom:
    {{- range .Values.providerKeys.existingSecrets }}
    - secretRef: {name: {{ . | quote }}}
    {{- end }}
    {{- if .Values.providerKeys.values }}
    - secretRef: {name: {{ include "plano-extproc.keysSecretName" . | quote }}}
    {{- end }}
  {{- end }}
  ports:
    - {name: plano-metrics, containerPort: {{ .Values.extproc.metricsPort | int }}, protocol: TCP}
  startupProbe:
    {{- include "plano-extproc.healthCheck" . | nindent 4 }}
    {{- toYaml .Values.extproc.startupProbe | nindent 4 }}
  readinessProbe:
    {{- include "plano-extproc.healthCheck" . | nindent 4 }}
    {{- toYaml .Values.extproc.readinessProbe | nindent 4 }}
  livenessProbe:
    {{- include "plano-extproc.healthCheck" . | nindent 4 }}
    {{- toYaml .Values.extproc.livenessProbe | nindent 4 }}
  {{- if .Values.extproc.preStopSleepSeconds }}
  lifecycle:
    preStop:
      sleep: {seconds: {{ .Values.extproc.preStopSleepSeconds | int }}}
  {{- end }}
  resources:
    {{- toYaml .Values.extproc.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - {name: plano-config, mountPath: /etc/plano, readOnly: true}
    - {name: plano-run, mountPath: {{ .Values.extproc.socketDir }}}
    - {name: plano-tmp, mountPath: /tmp}
    {{- if .Values.clientAuth.enabled }}
    - {name: plano-client-keys, mountPath: {{ include "plano-extproc.clientKeysDir" . }}, readOnly: true}
    {{- end }}
{{- end -}}

{{- define "plano-extproc.volumes" -}}
- name: plano-config
  configMap:
    name: {{ include "plano-extproc.configMapName" . }}
- name: plano-envoy
  emptyDir: {sizeLimit: 64Mi}
- name: plano-run
  emptyDir: {sizeLimit: 1Mi}
- name: plano-tmp
  emptyDir: {sizeLimit: 256Mi}
{{- if .Values.clientAuth.enabled }}
- name: plano-client-keys
  secret:
    secretName: {{ include "plano-extproc.clientKeysSecretName" . }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{/* Pod annotations: the config checksum (pods roll when the config changes) and Prometheus scraping. */}}
{{- define "plano-extproc.podAnnotations" -}}
checksum/plano-config: {{ include "plano-extproc.config" . | sha256sum }}
{{- if .Values.providerKeys.values }}
checksum/plano-provider-keys: {{ toJson .Values.providerKeys.values | sha256sum }}
{{- end }}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.extproc.metricsPort | int | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- define "plano-extproc.sidecarInitContainers" -}}{{ include "plano-extproc.initContainers" . }}{{- end -}}
{{- define "plano-extproc.sidecarContainers" -}}{{ include "plano-extproc.containers" . }}{{- end -}}
{{- define "plano-extproc.sidecarVolumes" -}}{{ include "plano-extproc.volumes" . }}{{- end -}}
{{- define "plano-extproc.sidecarPodAnnotations" -}}{{ include "plano-extproc.podAnnotations" . }}{{- end -}}
