{{/* The release's name for every object, at most 63 characters. */}}
{{- define "serval.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "serval.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "serval.labels" -}}
{{ include "serval.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "serval.serviceAccountName" -}}
{{- default (include "serval.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "serval.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The lease the agents elect the node garbage collector with. */}}
{{- define "serval.gcLease" -}}
serval-node-gc
{{- end -}}

{{/* SERVAL_DATASTORE: `kubernetes` or `etcd:URL,URL`. */}}
{{- define "serval.datastore" -}}
{{- $d := .Values.datastore -}}
{{- if eq $d.type "kubernetes" -}}
kubernetes
{{- else if eq $d.type "etcd" -}}
{{- if not $d.etcd.endpoints -}}
{{- fail "datastore.type is etcd: set datastore.etcd.endpoints" -}}
{{- end -}}
{{- printf "etcd:%s" (join "," $d.etcd.endpoints) -}}
{{- else -}}
{{- fail (printf "datastore.type must be kubernetes or etcd, not %q" $d.type) -}}
{{- end -}}
{{- end -}}

{{/* ADDRESS:PORT of the agent's HTTP server, brackets around an IPv6 address. */}}
{{- define "serval.metricsAddr" -}}
{{- $a := .Values.metrics.bindAddress -}}
{{- if contains ":" $a -}}
{{- printf "[%s]:%v" $a .Values.metrics.port -}}
{{- else -}}
{{- printf "%s:%v" $a .Values.metrics.port -}}
{{- end -}}
{{- end -}}
