"""Plugin machinery: the hook specifications, name registries and the pluggy host that fills them."""
