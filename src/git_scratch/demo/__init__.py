"""The README's main job, an app over git_scratch's public API (it imports `git_scratch` only).

    shapes.py   the synthetic dataset: rendered shapes, captions, questions, manifests
    recipe.py   train a small GIT on it from scratch, then caption and answer held-out images
"""
