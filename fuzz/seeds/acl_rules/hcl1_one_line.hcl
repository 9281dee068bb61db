"service" "db" { policy = "read", intentions = "write" } agent_prefix "" { policy = "read" } acl = "write" mesh = "deny"
