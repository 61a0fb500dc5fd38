"""Infrastructure as code for the pack: Terraform (AWS origins + CloudFront) and a Helm chart.

Both are rendered from the Plan as text; tests parse the Terraform with python-hcl2 and
render the Helm templates with a minimal `.Values` substitution (helm is not installed here).
"""

from __future__ import annotations

import json

import yaml

from flowcast.plan.decide import Plan


def _q(s: str) -> str:
    return json.dumps(s)  # HCL string literal (JSON escaping is valid HCL)


def terraform(plan: Plan) -> dict[str, str]:
    o = plan.origins
    assert o is not None
    cdn = plan.cdn
    seg = plan.distribution.segment_s.value if plan.distribution and plan.distribution.segment_s else 6.0
    files: dict[str, str] = {}
    files["versions.tf"] = """terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
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
    if cdn and cdn.name == "cloudfront":
        files["cloudfront.tf"] = _cloudfront(plan, seg, signed=plan.security is not None)
        outputs += '\noutput "cdn_domain" {\n  value = aws_cloudfront_distribution.live.domain_name\n}\n'
    else:
        files["cdn.md"] = (f"The CDN chosen is {cdn.name if cdn else 'none'} ({cdn.reason if cdn else ''}); it has no Terraform "
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
