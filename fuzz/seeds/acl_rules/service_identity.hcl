service "web" {
  policy = "write"
}
service "web-sidecar-proxy" {
  policy = "write"
}
service_prefix "" {
  policy = "read"
  intentions = "read"
}
node_prefix "" {
  policy = "read"
}
key_prefix "app/" { policy = "list" }
key "app/secret" { policy = "deny" }
operator = "read"
