"""Infrastructure as code for the pack: Terraform (AWS origins + CloudFront, Fastly, Akamai) and a Helm chart.

Both are rendered from the Plan as text; tests parse the Terraform with python-hcl2 and
render the Helm templates with a minimal `.Values` substitution (helm is not installed here).
"""

from __future__ import annotations

import json

import yaml

from flowcast.plan.decide import AKAMAI_TIERED_MAP, FASTLY_SHIELD_POP, Plan
from flowcast.protect.cdn import akamai as edgeauth
from flowcast.protect.cdn import fastly as fastly_token


def _q(s: str) -> str:
    return json.dumps(s)  # HCL string literal (JSON escaping is valid HCL)


def terraform(plan: Plan) -> dict[str, str]:
    o = plan.origins
    assert o is not None
    cdn = plan.cdn
    seg = plan.distribution.segment_s.value if plan.distribution and plan.distribution.segment_s else 6.0
    files: dict[str, str] = {}
    cdns = ((cdn.name,) + cdn.secondary) if cdn else ()
    providers = "".join(
        f"""
    {name} = {{
      source  = "{source}"
      version = "{version}"
    }}"""
        for name, source, version in (("fastly", "fastly/fastly", "~> 5.0"), ("akamai", "akamai/akamai", "~> 6.0"))
        if name in cdns
    )
    files["versions.tf"] = """terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }""" + providers + """
  }
}

provider "aws" {
  region = var.region
}

provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"
}
"""
    files["variables.tf"] = f"""variable "region" {{
  type    = string
  default = {_q(o.region)}
}}

variable "pipeline" {{
  type    = string
  default = {_q(plan.brief.pipeline)}
}}

variable "vpc_id" {{
  type = string
}}

variable "subnet_ids" {{
  description = "one subnet in each of the two availability zones ({', '.join(o.zones)})"
  type        = list(string)
}}

variable "origin_ami_id" {{
  type = string
}}

variable "origin_instance_type" {{
  type    = string
  default = "c6i.2xlarge"
}}

variable "origin_count" {{
  description = "{o.count.rule}"
  type        = number
  default     = {int(o.count.value)}
}}

variable "cloudfront_public_key_pem" {{
  description = "public half of the URL-signing key pair (the private half stays in the token service)"
  type        = string
  default     = ""
}}
"""
    files["origins.tf"] = f"""# N+1 origins across two availability zones behind a load balancer with health checks.
resource "aws_security_group" "origin" {{
  name   = "${{var.pipeline}}-origin"
  vpc_id = var.vpc_id

  ingress {{
    from_port   = 8080
    to_port     = 8080
    protocol    = "tcp"
    cidr_blocks = ["10.0.0.0/8"]
  }}

  egress {{
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }}
}}

resource "aws_launch_template" "origin" {{
  name_prefix            = "${{var.pipeline}}-origin-"
  image_id               = var.origin_ami_id
  instance_type          = var.origin_instance_type
  vpc_security_group_ids = [aws_security_group.origin.id]
  user_data              = base64encode("#!/bin/sh\\nexec flowcast up --config /etc/flowcast/stream_config.yaml\\n")
}}

resource "aws_lb" "origin" {{
  name               = "${{var.pipeline}}-origin"
  load_balancer_type = "application"
  subnets            = var.subnet_ids
  security_groups    = [aws_security_group.origin.id]
}}

resource "aws_lb_target_group" "origin" {{
  name     = "${{var.pipeline}}-origin"
  port     = 8080
  protocol = "HTTP"
  vpc_id   = var.vpc_id

  health_check {{
    path                = "/time"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
    matcher             = "200"
  }}
}}

resource "aws_lb_listener" "origin" {{
  load_balancer_arn = aws_lb.origin.arn
  port              = 80
  protocol          = "HTTP"

  default_action {{
    type             = "forward"
    target_group_arn = aws_lb_target_group.origin.arn
  }}
}}

resource "aws_autoscaling_group" "origin" {{
  name                      = "${{var.pipeline}}-origin"
  min_size                  = var.origin_count
  max_size                  = var.origin_count * 3
  desired_capacity          = var.origin_count
  vpc_zone_identifier       = var.subnet_ids
  target_group_arns         = [aws_lb_target_group.origin.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 60

  launch_template {{
    id      = aws_launch_template.origin.id
    version = "$Latest"
  }}
}}

resource "aws_autoscaling_policy" "origin_cpu" {{
  name                   = "${{var.pipeline}}-origin-cpu"
  autoscaling_group_name = aws_autoscaling_group.origin.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {{
    predefined_metric_specification {{
      predefined_metric_type = "ASGAverageCPUUtilization"
    }}
    target_value = 50
  }}
}}
"""
    outputs = 'output "origin_dns" {\n  value = aws_lb.origin.dns_name\n}\n'
    signed = plan.security is not None
    for name in cdns:
        if name == "cloudfront":
            files["cloudfront.tf"] = _cloudfront(plan, seg, signed=signed)
            outputs += '\noutput "cdn_domain" {\n  value = aws_cloudfront_distribution.live.domain_name\n}\n'
        elif name == "fastly":
            files["fastly.tf"] = _fastly(plan, signed=signed)
            outputs += '\noutput "fastly_service_id" {\n  value = fastly_service_vcl.live.id\n}\n'
        elif name == "akamai":
            files["akamai.tf"] = _akamai(plan)
            files["akamai_rules.json"] = akamai_rules(plan, signed=signed)
            outputs += '\noutput "akamai_edge_hostname" {\n  value = akamai_edge_hostname.live.edge_hostname\n}\n'
    if cdn and cdn.name not in ("cloudfront", "fastly", "akamai"):
        files["cdn.md"] = (f"The CDN chosen is {cdn.name} ({cdn.reason}); it has no Terraform "
                           "provider set up here. Point its pull zone at the `origin_dns` output and apply the cache policies "
                           "from the decisions document.\n")
    files["outputs.tf"] = outputs
    return files


def _cloudfront(plan: Plan, seg: float, *, signed: bool) -> str:
    o = plan.origins
    assert o is not None and plan.cdn is not None
    blocking_ttl = int(6 * seg)
    playlist_ttl = max(1, int(seg / 2))
    s = ""
    if signed:
        s += """resource "aws_cloudfront_public_key" "signing" {
  name        = "${var.pipeline}-signing"
  encoded_key = var.cloudfront_public_key_pem
}

resource "aws_cloudfront_key_group" "signing" {
  name  = "${var.pipeline}-signing"
  items = [aws_cloudfront_public_key.signing.id]
}

"""
    policies = {
        # name: (min, default, max TTL, query strings in the key)
        "playlist": (0, playlist_ttl, blocking_ttl, ["_HLS_msn", "_HLS_part", "_HLS_skip"]),
        "media": (86400, 31536000, 31536000, []),
    }
    for name, (mn, df, mx, qs) in policies.items():
        qs_block = ("query_string_behavior = \"whitelist\"\n      query_strings {\n        items = " + json.dumps(qs) + "\n      }"
                    if qs else "query_string_behavior = \"none\"")
        s += f"""# {name}: {'blocking reload responses cached 6 target durations, plain ones 1/2 (RFC 8216bis B.1); _HLS_throughput left out of the key' if qs else 'parts and segments are immutable (names never reused)'}
resource "aws_cloudfront_cache_policy" "{name}" {{
  name        = "${{var.pipeline}}-{name}"
  min_ttl     = {mn}
  default_ttl = {df}
  max_ttl     = {mx}

  parameters_in_cache_key_and_forwarded_to_origin {{
    enable_accept_encoding_gzip   = true
    enable_accept_encoding_brotli = false

    cookies_config {{
      cookie_behavior = "none"
    }}

    headers_config {{
      header_behavior = "none"
    }}

    query_strings_config {{
      {qs_block}
    }}
  }}
}}

"""
    trusted = "\n    trusted_key_groups     = [aws_cloudfront_key_group.signing.id]" if signed else ""
    behaviours = ""
    for pattern, pol in (("*.m3u8", "playlist"), ("*.mpd", "playlist"), ("*.m4s", "media"), ("*.mp4", "media")):
        behaviours += f"""
  ordered_cache_behavior {{
    path_pattern           = {_q(pattern)}
    target_origin_id       = "origins"
    viewer_protocol_policy = "redirect-to-https"
    allowed_methods        = ["GET", "HEAD", "OPTIONS"]
    cached_methods         = ["GET", "HEAD"]
    compress               = true
    cache_policy_id        = aws_cloudfront_cache_policy.{pol}.id{trusted}
  }}
"""
    s += f"""resource "aws_cloudfront_distribution" "live" {{
  enabled         = true
  is_ipv6_enabled = true
  http_version    = "http2and3"
  price_class     = "PriceClass_All"
  comment         = "${{var.pipeline}} live delivery"

  origin {{
    origin_id   = "origins"
    domain_name = aws_lb.origin.dns_name

    custom_origin_config {{
      http_port              = 80
      https_port             = 443
      origin_protocol_policy = "http-only"
      origin_ssl_protocols   = ["TLSv1.2"]
      origin_read_timeout    = 30
    }}

    origin_shield {{
      enabled              = true
      origin_shield_region = {_q(o.region)}
    }}
  }}
{behaviours}
  default_cache_behavior {{
    target_origin_id       = "origins"
    viewer_protocol_policy = "redirect-to-https"
    allowed_methods        = ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"]
    cached_methods         = ["GET", "HEAD"]
    cache_policy_id        = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad" # AWS managed CachingDisabled (licence, control)
  }}

  restrictions {{
    geo_restriction {{
      restriction_type = "none"
    }}
  }}

  viewer_certificate {{
    cloudfront_default_certificate = true
  }}
}}
"""
    return s


# ---- Fastly ---------------------------------------------------------------------------

def fastly_token_vcl(signed: bool) -> str:
    """vcl_recv snippet: the check FastlyVerifier does (flowcast.protect.cdn.fastly), in VCL.

    token=<exp>_<hex HMAC-SHA1(base64-decoded secret, path + exp)>; malformed or bad
    signature -> 403, genuine but at/after exp -> 410. The secret lives in a write-only
    edge dictionary, never in the VCL. Afterwards the token and _HLS_throughput leave the
    URL so every viewer shares one cache object per part.
    """
    param = fastly_token.QUERY_PARAM
    check = ""
    if signed:
        # Only on the first Fastly hop: the edge strips the token before forwarding, so the
        # shield POP (which runs vcl_recv again) would otherwise refuse every shielded miss.
        check = f"""if (fastly.ff.visits_this_service == 0 && req.url.path !~ "^/(time|license)(/|$)") {{
  declare local var.token STRING;
  declare local var.exp STRING;
  declare local var.sig STRING;
  if (req.url.path ~ "(^|/)\\.\\.?(/|$)" || req.url.path ~ "//" || req.url.path ~ {{"[%\\\\]"}}) {{  # long string: no %-escapes in it
    error 403 "token invalid";
  }}
  set var.token = subfield(req.url.qs, "{param}", "&");
  if (var.token !~ "^{fastly_token._TOKEN_RE.pattern}$") {{
    error 403 "token invalid";
  }}
  set var.exp = re.group.1;
  set var.sig = re.group.2;
  if (!digest.secure_is_equal(var.sig, regsub(digest.hmac_sha1(digest.base64_decode(table.lookup(token_secrets, "secret")), req.url.path var.exp), "^0x", ""))) {{
    error 403 "token invalid";
  }}
  if (!time.is_after(std.integer2time(std.atoi(var.exp)), now)) {{
    error 410 "token expired";
  }}
}}
"""
    strip = f'"{param}" querystring.filtersep() "_HLS_throughput"' if signed else '"_HLS_throughput"'
    return check + f"set req.url = querystring.filter(req.url, {strip});\n"


def _fastly(plan: Plan, *, signed: bool) -> str:
    o, cdn = plan.origins, plan.cdn
    assert o is not None and cdn is not None
    ttl = cdn.ttls
    pop = FASTLY_SHIELD_POP[o.region]
    # a blocking playlist request is held up to 3 target durations (6 x TD is its TTL) plus margin
    hold_ms = int(max(15.0, 3 * ttl["playlist_blocking"] / 6 + 5) * 1000)
    # (name, VCL condition, TTL): the origin's Cache-Control max-age per resource type. Fastly
    # applies matching cache settings in priority order, the last one winning, so the blocking
    # playlist rule comes after the plain playlist one (and Akamai's rule tree is ordered alike).
    rules = [
        ("playlist", 'req.url.ext == "m3u8"', ttl["playlist"]),
        ("playlist_blocking", 'req.url.ext == "m3u8" && req.url.qs ~ "(^|&)_HLS_msn="', ttl["playlist_blocking"]),
        ("manifest", 'req.url.ext == "mpd"', ttl["manifest"]),
        ("media", 'req.url.ext ~ "^(m4s|mp4)$"', ttl["media"]),
        ("init", 'req.url.path ~ "/init\\.mp4$"', ttl["init"]),
    ]
    blocks = ""
    for i, (name, stmt, seconds) in enumerate(rules):
        blocks += f"""
  condition {{
    name      = "{name}"
    type      = "CACHE"
    priority  = {10 + i}
    statement = {_q(stmt)}
  }}

  cache_setting {{
    name            = "{name}"
    action          = "cache"
    cache_condition = "{name}"
    ttl             = {seconds}
    stale_ttl       = 0
  }}
"""
    blocks += f"""
  condition {{
    name      = "license"
    type      = "CACHE"
    priority  = 30
    statement = {_q('req.url.path ~ "^/license"')}
  }}

  cache_setting {{
    name            = "license_pass"
    action          = "pass"
    cache_condition = "license"
  }}
"""
    vcl = fastly_token_vcl(signed)
    dictionary = ""
    items = ""
    if signed:
        dictionary = """
  dictionary {
    name       = "token_secrets"
    write_only = true
  }
"""
        items = """
resource "fastly_service_dictionary_items" "token_secrets" {
  service_id    = fastly_service_vcl.live.id
  dictionary_id = one([for d in fastly_service_vcl.live.dictionary : d.dictionary_id if d.name == "token_secrets"])
  manage_items  = true
  items = {
    secret = var.fastly_token_secret_b64
  }
}
"""
    return f"""# Fastly service for the live origins ({cdn.reason}).
# TTLs are the origin's own Cache-Control max-age per resource type (flowcast.origin.cache).
variable "fastly_domain" {{
  type    = string
  default = "live.example.com"
}}

variable "fastly_shield_pop" {{
  description = "three-letter code of the shielding POP nearest the origins ({o.region})"
  type        = string
  default     = "{pop}"
}}

variable "fastly_token_secret_b64" {{
  description = "base64 URL-token secret, the key FastlySigner signs with (no NUL byte once decoded: VCL strings end at NUL); stored in a write-only dictionary"
  type        = string
  sensitive   = true
  default     = ""
}}

data "fastly_datacenters" "all" {{}}

locals {{
  fastly_shield = one([for pop in data.fastly_datacenters.all.pops : pop.shield if pop.code == var.fastly_shield_pop])
}}

resource "fastly_service_vcl" "live" {{
  name = "${{var.pipeline}}-live"

  domain {{
    name = var.fastly_domain
  }}

  healthcheck {{
    name              = "origin_time"
    host              = aws_lb.origin.dns_name
    path              = "/time"
    method            = "GET"
    check_interval    = 10000
    timeout           = 5000
    window            = 3
    threshold         = 2
    expected_response = 200
  }}

  # The origin load balancer spans both zones ({", ".join(o.zones)}) with its own health checks;
  # Fastly checks it too and fails the service over only when the whole group is down.
  backend {{
    name                  = "origins"
    address               = aws_lb.origin.dns_name
    override_host         = aws_lb.origin.dns_name
    port                  = 80
    use_ssl               = false
    healthcheck           = "origin_time"
    shield                = local.fastly_shield
    connect_timeout       = 1000
    first_byte_timeout    = {hold_ms}
    between_bytes_timeout = 10000
    auto_loadbalance      = false
  }}
{dictionary}{blocks}
  snippet {{
    name     = "token_and_cache_key"
    type     = "recv"
    priority = 10
    content  = <<-VCL
{_indent(vcl, 6)}    VCL
  }}

  force_destroy = false
}}
{items}"""


def _indent(text: str, n: int) -> str:
    return "".join(" " * n + line + "\n" for line in text.splitlines())


# ---- Akamai ----------------------------------------------------------------------------

def akamai_rules(plan: Plan, *, signed: bool) -> str:
    """The property's rule tree (PAPI JSON), a Terraform templatefile: ${origin_hostname},
    ${cp_code_id} and ${edgeauth_key_hex} are filled in at apply time, so no key is in the pack."""
    o, cdn = plan.origins, plan.cdn
    assert o is not None and cdn is not None
    ttl = cdn.ttls

    def caching(seconds: int) -> dict[str, object]:
        return {"name": "caching", "options": {"behavior": "MAX_AGE", "mustRevalidate": False, "ttl": f"{seconds}s"}}

    def ext(*values: str) -> dict[str, object]:
        return {"name": "fileExtension", "options": {"matchOperator": "IS_ONE_OF", "values": list(values), "matchCaseSensitive": False}}

    hls_params = ["_HLS_msn", "_HLS_part", "_HLS_skip"]
    behaviors: list[dict[str, object]] = [
        {"name": "origin", "options": {"originType": "CUSTOMER", "hostname": "${origin_hostname}", "forwardHostHeader": "ORIGIN_HOSTNAME",
                                       "cacheKeyHostname": "ORIGIN_HOSTNAME", "compress": True, "enableTrueClientIp": False,
                                       "httpPort": 80, "httpsPort": 443, "originCertificate": "", "verificationMode": "PLATFORM_SETTINGS", "ports": ""}},
        {"name": "cpCode", "options": {"value": {"id": "${cp_code_id}"}}},
        {"name": "tieredDistribution", "options": {"enabled": True, "tieredDistributionMap": AKAMAI_TIERED_MAP[o.region]}},
        {"name": "caching", "options": {"behavior": "NO_STORE"}},
    ]
    if signed:
        # The settings of our EdgeAuth signer/verifier (flowcast.protect.cdn.akamai): token name,
        # HMAC algorithm, no early escaping; URL tokens sign the path without the query.
        behaviors.append({"name": "verifyTokenAuthorization", "options": {
            "useAdvanced": False, "location": "QUERY_STRING", "locationId": edgeauth.TOKEN_NAME,
            "algorithm": "SHA256", "key": "${edgeauth_key_hex}", "transitionKey": "",
            "escapeHmacInputs": False, "ignoreQueryString": True, "failureResponse": True}})
    children = [
        {"name": "playlists", "criteriaMustSatisfy": "all", "criteria": [ext("m3u8")],
         "behaviors": [caching(ttl["playlist"]), {"name": "cacheKeyQueryParams", "options": {"behavior": "INCLUDE", "parameters": hls_params, "exactMatch": True}}],
         "children": [], "options": {}},
        {"name": "blocking playlists", "criteriaMustSatisfy": "all",
         "criteria": [ext("m3u8"), {"name": "queryStringParameter", "options": {"parameterName": "_HLS_msn", "matchOperator": "EXISTS", "matchCaseSensitiveName": True}}],
         "behaviors": [caching(ttl["playlist_blocking"])], "children": [], "options": {}},
        {"name": "manifests", "criteriaMustSatisfy": "all", "criteria": [ext("mpd")], "behaviors": [caching(ttl["manifest"])], "children": [], "options": {}},
        {"name": "media", "criteriaMustSatisfy": "all", "criteria": [ext("m4s", "mp4")],
         "behaviors": [caching(ttl["media"]), {"name": "cacheKeyQueryParams", "options": {"behavior": "IGNORE_ALL"}}], "children": [], "options": {}},
        {"name": "init segments", "criteriaMustSatisfy": "all",
         "criteria": [{"name": "path", "options": {"matchOperator": "MATCHES_ONE_OF", "values": ["*/init.mp4"], "matchCaseSensitive": True}}],
         "behaviors": [caching(ttl["init"])], "children": [], "options": {}},
    ]
    tree = {"rules": {"name": "default", "options": {"is_secure": True}, "behaviors": behaviors, "children": children,
                      "comments": f"{plan.brief.pipeline}: TTLs are the origin's Cache-Control max-age (flowcast.origin.cache)"}}
    # cp_code_id is a number in PAPI: unquote its placeholder after dumping.
    return json.dumps(tree, indent=2).replace('"${cp_code_id}"', "${cp_code_id}") + "\n"


def _akamai(plan: Plan) -> str:
    cdn = plan.cdn
    assert cdn is not None
    return f"""# Akamai property for the live origins ({cdn.reason}).
variable "akamai_contract_id" {{
  type = string
}}

variable "akamai_group_id" {{
  type = string
}}

variable "akamai_product_id" {{
  type    = string
  default = "prd_Adaptive_Media_Delivery"
}}

variable "akamai_hostname" {{
  type    = string
  default = "live.example.com"
}}

variable "akamai_edgeauth_key_hex" {{
  description = "hex EdgeAuth key, the key EdgeAuthSigner signs with"
  type        = string
  sensitive   = true
  default     = ""
}}

variable "akamai_notify_emails" {{
  type    = list(string)
  default = []
}}

resource "akamai_cp_code" "live" {{
  name        = "${{var.pipeline}}-live"
  contract_id = var.akamai_contract_id
  group_id    = var.akamai_group_id
  product_id  = var.akamai_product_id
}}

resource "akamai_edge_hostname" "live" {{
  contract_id   = var.akamai_contract_id
  group_id      = var.akamai_group_id
  product_id    = var.akamai_product_id
  edge_hostname = "${{var.pipeline}}-live.akamaized.net"
  ip_behavior   = "IPV6_COMPLIANCE"
}}

resource "akamai_property" "live" {{
  name        = "${{var.pipeline}}-live"
  contract_id = var.akamai_contract_id
  group_id    = var.akamai_group_id
  product_id  = var.akamai_product_id
  rule_format = "latest" # pin a dated rule format once applied

  hostnames {{
    cname_from             = var.akamai_hostname
    cname_to               = akamai_edge_hostname.live.edge_hostname
    cert_provisioning_type = "DEFAULT"
  }}

  rules = templatefile("${{path.module}}/akamai_rules.json", {{
    origin_hostname  = aws_lb.origin.dns_name
    cp_code_id       = tonumber(trimprefix(akamai_cp_code.live.id, "cpc_"))
    edgeauth_key_hex = var.akamai_edgeauth_key_hex
  }})
}}

resource "akamai_property_activation" "staging" {{
  property_id = akamai_property.live.id
  contact     = var.akamai_notify_emails
  version     = akamai_property.live.latest_version
  network     = "STAGING"
}}
"""


# ---- Helm ---------------------------------------------------------------------------

def helm(plan: Plan, config_yaml: str) -> dict[str, str]:
    o = plan.origins
    values = {
        "image": {"repository": "ghcr.io/flowcast/flowcast", "tag": "0.1.0"},
        "origin": {"replicas": int(o.count.value) if o else 2, "port": 8080, "cpu": "2", "memory": "2Gi"},
        "encoder": {"replicas": 2, "cpu": "4", "memory": "4Gi"},
        "pipeline": plan.brief.pipeline,
        "config": config_yaml,
    }
    chart = {"apiVersion": "v2", "name": f"flowcast-{plan.brief.pipeline}", "version": "0.1.0", "appVersion": "0.1.0",
             "description": f"flowcast pipeline {plan.brief.pipeline} (generated by flowcast plan)"}
    configmap = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  stream_config.yaml: |
{{ .Values.config | indent 4 }}
"""
    deployment = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-origin
  labels:
    app: flowcast-origin
    pipeline: {{ .Values.pipeline }}
spec:
  replicas: {{ .Values.origin.replicas }}
  selector:
    matchLabels:
      app: flowcast-origin
  template:
    metadata:
      labels:
        app: flowcast-origin
    spec:
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: DoNotSchedule
          labelSelector:
            matchLabels:
              app: flowcast-origin
      containers:
        - name: origin
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
          args: ["up", "--config", "/etc/flowcast/stream_config.yaml"]
          ports:
            - containerPort: {{ .Values.origin.port }}
          readinessProbe:
            httpGet:
              path: /time
              port: {{ .Values.origin.port }}
            periodSeconds: 5
          livenessProbe:
            httpGet:
              path: /time
              port: {{ .Values.origin.port }}
            periodSeconds: 10
          resources:
            requests:
              cpu: "{{ .Values.origin.cpu }}"
              memory: "{{ .Values.origin.memory }}"
          volumeMounts:
            - name: config
              mountPath: /etc/flowcast
      volumes:
        - name: config
          configMap:
            name: {{ .Release.Name }}-config
"""
    service = """apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-origin
spec:
  selector:
    app: flowcast-origin
  ports:
    - port: 80
      targetPort: {{ .Values.origin.port }}
"""
    pdb = """apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .Release.Name }}-origin
spec:
  minAvailable: 1
  selector:
    matchLabels:
      app: flowcast-origin
"""
    return {
        "Chart.yaml": yaml.safe_dump(chart, sort_keys=False),
        "values.yaml": yaml.safe_dump(values, sort_keys=False),
        "templates/configmap.yaml": configmap,
        "templates/deployment.yaml": deployment,
        "templates/service.yaml": service,
        "templates/pdb.yaml": pdb,
    }
