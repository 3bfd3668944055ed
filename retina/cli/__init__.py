"""The console scripts, one thin module each; :mod:`retina.cli.common` runs them."""
