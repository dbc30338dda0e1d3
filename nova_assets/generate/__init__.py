"""Demo and benchmark traffic generators (`nova generate ...`)."""
