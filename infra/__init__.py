"""What runs Eddy's services: the embedded dev stack, topic set-up, container files."""
