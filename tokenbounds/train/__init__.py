"""Training the free parameters of the project's GPT in any parametrization."""
