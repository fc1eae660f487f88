{{/*
Names. Deliberately independent of .Chart so the sidecar templates, included from another chart with
(dict "Values" .Values.plano "Release" .Release), compute the same names as this chart's own objects.
*/}}
{{- define "plano-extproc.name" -}}
{{- default "plano-extproc" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "plano-extproc.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "plano-extproc.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "plano-extproc.tritonFullname" -}}
{{- printf "%s-triton" (include "plano-extproc.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{- define "plano-extproc.configMapName" -}}
{{- printf "%s-config" (include "plano-extproc.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{- define "plano-extproc.clientKeysSecretName" -}}
{{- if .Values.clientAuth.existingSecret -}}
{{- .Values.clientAuth.existingSecret -}}
{{- else -}}
{{- printf "%s-client-keys" (include "plano-extproc.fullname" . | trunc 48 | trimSuffix "-") -}}
{{- end -}}
{{- end -}}

{{/* where the ext_proc reads the client keys (one file per key, from the Secret) */}}
{{- define "plano-extproc.clientKeysDir" -}}/etc/plano-client-keys{{- end -}}

{{- define "plano-extproc.keysSecretName" -}}
{{- printf "%s-provider-keys" (include "plano-extproc.fullname" . | trunc 48 | trimSuffix "-") -}}
{{- end -}}

{{- define "plano-extproc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "plano-extproc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plano-extproc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "plano-extproc.labels" -}}
helm.sh/chart: {{ include "plano-extproc.chart" . }}
{{ include "plano-extproc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: plano
{{- end -}}

{{- define "plano-extproc.gatewaySelectorLabels" -}}
{{ include "plano-extproc.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "plano-extproc.tritonSelectorLabels" -}}
{{ include "plano-extproc.selectorLabels" . }}
app.kubernetes.io/component: triton
{{- end -}}

{{- define "plano-extproc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "plano-extproc.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "plano-extproc.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}
{{- end -}}

{{/*
The plano config as YAML: .Values.config, plus a listener on envoy.port when none is given, plus
client_auth reading the client-key Secret when clientAuth.enabled, plus routing.router pointed at the
chart's Triton when triton.enabled. Never holds a key: access keys stay
`$ENV_VAR` references, resolved by the ext_proc from the Secret-backed env vars.
*/}}
{{- define "plano-extproc.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if not (hasKey $cfg "listeners") -}}
{{- $address := ternary "127.0.0.1" "0.0.0.0" (eq .Values.mode "sidecar") -}}
{{- $_ := set $cfg "listeners" (list (dict "name" "egress_traffic" "type" "model" "address" $address "port" (int .Values.envoy.port))) -}}
{{- end -}}
{{- if and .Values.clientAuth.enabled (not (hasKey $cfg "client_auth")) -}}
{{- $_ := set $cfg "client_auth" (dict "keys_dir" (include "plano-extproc.clientKeysDir" .)) -}}
{{- end -}}
{{- if .Values.triton.enabled -}}
{{- $routing := dict -}}
{{- if hasKey $cfg "routing" -}}{{- $routing = index $cfg "routing" -}}{{- end -}}
{{- $router := dict -}}
{{- if hasKey $routing "router" -}}{{- $router = index $routing "router" -}}{{- end -}}
{{- $_ := set $router "backend" "triton" -}}
{{- $_ := set $router "url" (printf "%s.%s.svc:8001" (include "plano-extproc.tritonFullname" .) .Release.Namespace) -}}
{{- $_ := set $router "model" .Values.triton.routerModel -}}
{{- $_ := set $routing "router" $router -}}
{{- $_ := set $cfg "routing" $routing -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The Envoy bootstrap path written by the init container and read by Envoy. */}}
{{- define "plano-extproc.bootstrapPath" -}}/etc/envoy/envoy.yaml{{- end -}}

{{- define "plano-extproc.socketAddress" -}}
{{- printf "unix:%s/extproc.sock" (trimSuffix "/" .Values.extproc.socketDir) -}}
{{- end -}}

{{/* The health check's targets: the socket, or with N workers every worker's (contract.worker_address) */}}
{{- define "plano-extproc.healthTargets" -}}
{{- $workers := .Values.extproc.workers | int -}}
{{- if gt $workers 1 -}}
{{- $dir := trimSuffix "/" .Values.extproc.socketDir -}}
{{- $targets := list -}}
{{- range $k := until $workers -}}
{{- $targets = append $targets (printf "unix:%s/extproc-%d.sock" $dir $k) -}}
{{- end -}}
{{- join "," $targets -}}
{{- else -}}
{{- include "plano-extproc.socketAddress" . -}}
{{- end -}}
{{- end -}}


{{/* gRPC health check (grpc.health.v1) of the ext_proc at $PLANO_HEALTH_TARGET; same as the image's HEALTHCHECK. */}}
{{- define "plano-extproc.healthCheck" -}}
exec:
  command:
    - python
    - -c
    - "import os,sys,grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ok=lambda t: g.HealthStub(grpc.insecure_channel(t)).Check(h.HealthCheckRequest(service='plano.extproc.alive'), timeout=4).status == h.HealthCheckResponse.SERVING; sys.exit(0 if all(ok(t) for t in os.environ['PLANO_HEALTH_TARGET'].split(',')) else 1)"
{{- end -}}
