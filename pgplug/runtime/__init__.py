"""The runtime: rollout collection, the policy runner seam, the gradient step and the SB3 algorithm base."""
