"""The context broker: an HTTPS service, inside the controller, that the agents talk to."""
