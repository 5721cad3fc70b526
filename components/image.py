"""The image every component runs from: k8s/IMAGE (e.g. convbench:0.1.0), unless `with_image` overrides it."""


def _image() -> str:
    try:
        from convbench.orchestrate.k8s_render import default_image

        return default_image()
    except Exception:  # noqa: BLE001 - compiling must not depend on the deployment files being intact
        return "convbench:0.1.0"


IMAGE = _image()
