{{/* The release's name for every object; one release per mode. */}}
{{- define "tapio.fullname" -}}
{{- printf "%s-%s" .Release.Name .Values.mode | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "tapio.labels" -}}
app.kubernetes.io/name: tapio
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.mode }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
{{- end }}

{{- define "tapio.selectorLabels" -}}
app.kubernetes.io/name: tapio
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "tapio.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The kafka component's TLS table, when a secret is named (mounted at /etc/tapio/tls/kafka). */}}
{{- define "tapio.kafkaTLS" -}}
{{- with .Values.kafka.tls.secretName }}
{{- if $.Values.kafka.tls.clientCertificate }}
tls = { ca_file = "/etc/tapio/tls/kafka/ca.crt", cert_file = "/etc/tapio/tls/kafka/tls.crt", key_file = "/etc/tapio/tls/kafka/tls.key" }
{{- else }}
tls = { ca_file = "/etc/tapio/tls/kafka/ca.crt" }
{{- end }}
{{- end }}
{{- end }}

{{/* The clickhouse sink's credentials, from the environment the secret fills. */}}
{{- define "tapio.clickhouseAuth" -}}
{{- if .Values.clickhouse.auth.secretName }}
auth = { user = "${CLICKHOUSE_USER}", password = "${CLICKHOUSE_PASSWORD}" }
{{- end }}
{{- end }}

{{- define "tapio.pipeline" -}}
{{- if .Values.pipeline }}
{{- .Values.pipeline }}
{{- else }}
{{- tpl (.Files.Get (printf "files/%s.toml" .Values.mode)) . }}
{{- end }}
{{- end }}

{{/* The tapio container, the same in every mode but for its environment, probes and privileges. */}}
{{- define "tapio.container" -}}
image: {{ include "tapio.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: ["run", "--config", "/etc/tapio/tapio.toml"]
env:
  - name: NODE_NAME
    valueFrom:
      fieldRef:
        fieldPath: spec.nodeName
  - name: KAFKA_BROKERS
    value: {{ required "kafka.brokers is required" .Values.kafka.brokers | quote }}
  - name: TAPIO_API_ADDRESS
    value: {{ printf "0.0.0.0:%v" .Values.api.port | quote }}
  - name: TAPIO_DATA_DIR
    value: /var/lib/tapio
{{- if eq .Values.mode "aggregator" }}
  - name: CLICKHOUSE_URL
    value: {{ required "clickhouse.url is required" .Values.clickhouse.url | quote }}
{{- with .Values.clickhouse.auth.secretName }}
  - name: CLICKHOUSE_USER
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: user
  - name: CLICKHOUSE_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: password
{{- end }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
  - name: APP_LOG_DIR
    value: {{ .Values.sidecar.logDir | quote }}
{{- end }}
ports:
  - name: tapio-api
    containerPort: {{ .Values.api.port }}
readinessProbe:
  httpGet:
    path: /health
    port: tapio-api
  periodSeconds: 10
livenessProbe:
  httpGet:
    path: /health
    port: tapio-api
  initialDelaySeconds: 10
  periodSeconds: 20
resources:
{{- if eq .Values.mode "agent" }}
{{ toYaml .Values.resources.agent | indent 2 }}
{{- else if eq .Values.mode "aggregator" }}
{{ toYaml .Values.resources.aggregator | indent 2 }}
{{- else }}
{{ toYaml .Values.resources.sidecar | indent 2 }}
{{- end }}
volumeMounts:
  - name: config
    mountPath: /etc/tapio
    readOnly: true
  - name: state
    mountPath: /var/lib/tapio
{{- if .Values.kafka.tls.secretName }}
  - name: kafka-tls
    mountPath: /etc/tapio/tls/kafka
    readOnly: true
{{- end }}
{{- end }}

{{/* The volumes every mode's pod has: the pipeline and the Kafka TLS secret. */}}
{{- define "tapio.volumes" -}}
- name: config
  configMap:
    name: {{ include "tapio.fullname" . }}
{{- with .Values.kafka.tls.secretName }}
- name: kafka-tls
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}

{{/* An unprivileged pod: aggregator and sidecar. */}}
{{- define "tapio.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}
