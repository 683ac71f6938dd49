"""The task matrix and presets as TOML data (installed as the package `jaxfundus.experiments`)."""
