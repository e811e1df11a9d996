"""Transfer strategies, engine half: each a module of its own behind the Strategy protocol."""
