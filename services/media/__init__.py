"""Media files for the call service: WAV reading/writing and the spoken prompts the PBX plays."""
