"""Router backends: something that, given routes and a conversation, names the route that fits."""
