# shellcheck shell=bash
# What the benchmark scripts share: the heads of the peers' configurations, so that every
# script measures nginx and haproxy configured the same way (bench/run.sh's, BENCHMARKS.md).

# nginx_head DIR [WORKERS]: an nginx in the foreground, its pid, logs and temporary files in
# DIR, WORKERS worker processes (default 1; `auto` is one per core), opening `http {`.
nginx_head() {
  local user=""
  [ "$(id -u)" != 0 ] || user="user root;"
  cat <<NGINX
$user
worker_processes ${2:-1};
worker_rlimit_nofile 65536;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 24000; }
http {
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  # Any number of requests on a client connection, as the gateway and haproxy allow: nginx
  # closes one after 1,000 by default, which failed its HTTP/2 rows (h2load does not
  # reconnect: "failed: 204" at 2,000 req/s in issue 20's fourth run) and cost its HTTP/1.1
  # rows a new connection, over TLS a handshake, every 1,000 requests.
  keepalive_requests 1000000;
NGINX
}

# nginx_proxy_server LISTEN_PORT UPSTREAM [CERT_DIR]: one server block proxying /v2/ to the
# upstream block UPSTREAM the canonical way for a registry: no buffering either way, no body
# limit, keep-alive HTTP/1.1 upstream, Host and X-Forwarded-* passed, Authorization untouched
# (the registry checks the Bearer token itself). With CERT_DIR (tls.crt, tls.key), the
# canonical TLS server: TLS 1.2 and 1.3, HTTP/2, a session cache.
nginx_proxy_server() {
  local listen="listen 127.0.0.1:$1;"
  if [ -n "${3:-}" ]; then
    listen="listen 127.0.0.1:$1 ssl http2;
    ssl_certificate $3/tls.crt;
    ssl_certificate_key $3/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1h;"
  fi
  cat <<NGINX
  server {
    $listen
    client_max_body_size 0;
    chunked_transfer_encoding on;
    location /v2/ {
      proxy_pass http://$2;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 900;
      proxy_send_timeout 900;
    }
  }
NGINX
}

# haproxy_head MAXCONN: haproxy's global and defaults sections: HTTP mode, httplog to stdout,
# X-Forwarded-For, the gateway's timeouts.
haproxy_head() {
  cat <<HAPROXY
global
  maxconn $1
  log stdout format raw local0
defaults
  mode http
  log global
  option httplog
  option forwardfor
  timeout connect 5s
  timeout client 900s
  timeout server 900s
  timeout http-request 30s
  timeout http-keep-alive 90s
HAPROXY
}
