{{/* Names, labels and the pieces every component shares. */}}

{{- define "wgsub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wgsub.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>"; call with (list $ "operator"). */}}
{{- define "wgsub.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "wgsub.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) -}}
{{- end -}}

{{- define "wgsub.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "wgsub.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "wgsub.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{ include "wgsub.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: wgsub
{{- end -}}

{{- define "wgsub.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "wgsub.nodeAgentImage" -}}
{{- printf "%s:%s" .Values.nodeAgent.image.repository (default .Chart.AppVersion .Values.nodeAgent.image.tag) -}}
{{- end -}}

{{- define "wgsub.leaseName" -}}
{{- default (include "wgsub.componentName" (list . "operator")) .Values.operator.leaderElection.leaseName -}}
{{- end -}}

{{- define "wgsub.serverKeySecretName" -}}
{{- default (printf "%s-%s-server-key" (include "wgsub.fullname" .) .Values.defaultServer.name) .Values.defaultServer.privateKeySecretName -}}
{{- end -}}

{{- define "wgsub.publicUrl" -}}
{{- if .Values.api.publicUrl -}}
{{- .Values.api.publicUrl | trimSuffix "/" -}}
{{- else if and .Values.api.ingress.enabled .Values.api.ingress.host -}}
{{- printf "https://%s" .Values.api.ingress.host -}}
{{- end -}}
{{- end -}}

{{- define "wgsub.miniAppUrl" -}}
{{- if .Values.bot.miniAppUrl -}}
{{- .Values.bot.miniAppUrl -}}
{{- else if (include "wgsub.publicUrl" .) -}}
{{- printf "%s/miniapp/" (include "wgsub.publicUrl" .) -}}
{{- end -}}
{{- end -}}

{{/* Pod-level security for the non-root components. */}}
{{- define "wgsub.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security for the non-root components. */}}
{{- define "wgsub.containerSecurityContext" -}}
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Log settings, read alike by every binary. */}}
{{- define "wgsub.logEnv" -}}
- name: WGSUB_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: WGSUB_LOG
  value: {{ .Values.logLevel | quote }}
{{- end -}}

{{- define "wgsub.databaseUrlEnv" -}}
- name: WGSUB_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.database.existingSecret }}
      key: {{ .Values.secrets.database.urlKey }}
{{- end -}}

{{/* PgBouncer transaction pooling (the api, its migrate Job and the bot). */}}
{{- define "wgsub.pgbouncerEnv" -}}
- name: WGSUB_DATABASE_PGBOUNCER
  value: {{ .Values.database.pgbouncer | quote }}
{{- end -}}

{{/* The Telegram bot token (the api checks initData with it, the bot talks with it). */}}
{{- define "wgsub.botTokenEnv" -}}
- name: WGSUB_BOT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.telegram.existingSecret }}
      key: {{ .Values.secrets.telegram.botTokenKey }}
{{- end -}}

{{/* 54-FZ receipts; the api and the bot read the same variables. */}}
{{- define "wgsub.receiptsEnv" -}}
- name: WGSUB_YOOKASSA_RECEIPTS
  value: {{ .Values.yookassa.receipts.enabled | quote }}
- name: WGSUB_YOOKASSA_VAT_CODE
  value: {{ .Values.yookassa.receipts.vatCode | quote }}
{{- end -}}

{{/* The URL Telegram posts the bot's updates to (webhook mode): bot.webhook.url, or
<api.publicUrl>/telegram/webhook. */}}
{{- define "wgsub.botWebhookUrl" -}}
{{- if .Values.bot.webhook.url -}}
{{- .Values.bot.webhook.url -}}
{{- else if (include "wgsub.publicUrl" .) -}}
{{- printf "%s/telegram/webhook" (include "wgsub.publicUrl" .) -}}
{{- else -}}
{{- fail "bot.webhook.url (or api.publicUrl, or api.ingress.host) is required with bot.mode=webhook" -}}
{{- end -}}
{{- end -}}

{{/* The path of the bot's webhook URL, which the bot serves ("/" when the URL has none). */}}
{{- define "wgsub.botWebhookPath" -}}
{{- default "/" (urlParse (include "wgsub.botWebhookUrl" .)).path -}}
{{- end -}}

{{- define "wgsub.yookassaEnv" -}}
- name: WGSUB_YOOKASSA_SHOP_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.yookassa.existingSecret }}
      key: {{ .Values.secrets.yookassa.shopIdKey }}
- name: WGSUB_YOOKASSA_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.yookassa.existingSecret }}
      key: {{ .Values.secrets.yookassa.secretKeyKey }}
{{- end -}}

{{/* Where YooKassa sends the user after paying: yookassa.returnUrl, or the Mini App. */}}
{{- define "wgsub.returnUrl" -}}
{{- default (include "wgsub.miniAppUrl" .) .Values.yookassa.returnUrl -}}
{{- end -}}

{{- define "wgsub.plansVolume" -}}
- name: plans
  configMap:
    name: {{ include "wgsub.componentName" (list . "plans") }}
{{- end -}}

{{/* Probes on the component's HTTP port: /healthz (alive) and /readyz (ready). */}}
{{- define "wgsub.probes" -}}
# Up to a minute to start (connecting to the database and the API server), then the liveness
# probe's tighter limits.
startupProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 2
  timeoutSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ . }}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end -}}

{{- /*
A pod's affinity: the component's own (list $ "<component>" <affinity value>) when set,
otherwise a preferred anti-affinity that spreads its replicas over nodes by hostname.
*/ -}}
{{- define "wgsub.affinity" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $affinity := index . 2 -}}
{{- if $affinity -}}
{{- toYaml $affinity -}}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "wgsub.selectorLabels" (list $root $component) | nindent 12 }}
{{- end -}}
{{- end -}}

{{- define "wgsub.botLeaseName" -}}
{{- include "wgsub.componentName" (list . "bot") -}}
{{- end -}}
