"""Issue content: the model, the YAML issue format and the plain-text importer."""
