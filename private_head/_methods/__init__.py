"""The built-in training methods, one module each (docs/architecture.md, "Methods").

Every module here registers its method when imported; ``private_head._registry`` imports all of
them (but the underscore modules, which hold what they share) on first use, so adding a method
means adding one module.
"""
