from cellcommons.storage.object_store import ObjectInfo, ObjectStore

__all__ = ["ObjectInfo", "ObjectStore"]
