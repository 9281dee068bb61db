service "web" { policy = "allow" }
