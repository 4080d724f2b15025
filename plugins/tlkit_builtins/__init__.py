"""tlkit's built-in plugins: Keras application bases, the classic heads, Keras augmentations.

They are registered through tlkit's own ``tlkit`` entry points, exactly like a
third-party plugin, and the core never imports them.
"""
