"""Model families, one module each (docs/architecture.md, "Backbones").

Every module here registers its ``registry.Family`` and its named backbones when imported; the
registry imports all of them on first use, so adding a family means adding one module.
"""
