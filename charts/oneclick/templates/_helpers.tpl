{{- define "oneclick.name" -}}oneclick{{- end -}}

{{- define "oneclick.fullname" -}}
{{- if contains "oneclick" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-oneclick" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "oneclick.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oneclick.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "oneclick.labels" -}}
{{ include "oneclick.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "oneclick.caSecret" -}}
{{- .Values.broker.tls.existingSecret | default (printf "%s-broker-ca" (include "oneclick.fullname" .)) -}}
{{- end -}}

{{- /* The broker's URL as VMs reach it: through a NodePort, the node's port. */ -}}
{{- define "oneclick.brokerURL" -}}
{{- $port := .Values.broker.service.port -}}
{{- if and (eq .Values.broker.service.type "NodePort") .Values.broker.service.nodePort -}}{{- $port = .Values.broker.service.nodePort -}}{{- end -}}
{{- if .Values.broker.url -}}{{ .Values.broker.url }}
{{- else if .Values.broker.service.externalAddress -}}{{ printf "https://%s:%v" .Values.broker.service.externalAddress $port }}
{{- end -}}
{{- end -}}
