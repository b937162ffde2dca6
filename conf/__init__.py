"""lightopt's Hydra config groups, installed as the package ``lightopt.conf``: add ``pkg://lightopt.conf`` to a
primary config's ``hydra.searchpath`` to compose them (see the README)."""
