"""A small schema shaped like the real one (Relay `...Connection` fields with first/last) whose resolvers record
every call, so tests can tell whether anything ran."""

from __future__ import annotations

from dataclasses import dataclass, field

import strawberry

from cellcommons.auth.principal import Principal
from cellcommons.errors import NotFound
from cellcommons.graphql.limits import Budget, Limits, protection
from cellcommons.settings import Settings


@dataclass
class Context:
    principal: Principal | None = None
    client_host: str | None = "192.0.2.1"
    calls: list[str] = field(default_factory=list)


def _record(info: strawberry.Info, name: str) -> None:
    info.context.calls.append(name)


@strawberry.type
class Part:
    id: strawberry.ID


@strawberry.type
class PartEdge:
    node: Part


@strawberry.type
class PartConnection:
    edges: list[PartEdge]


def _parts(info: strawberry.Info, first: int | None, last: int | None) -> PartConnection:
    _record(info, "parts")
    size = first if first is not None else last or 0
    return PartConnection(edges=[PartEdge(node=Part(id=strawberry.ID(f"p{i}"))) for i in range(size)])


@strawberry.type
class Item:
    id: strawberry.ID

    @strawberry.field
    def parts(self, info: strawberry.Info, first: int | None = None, last: int | None = None) -> PartConnection:
        return _parts(info, first, last)

    @strawberry.field
    def child(self, info: strawberry.Info) -> Item:
        _record(info, "child")
        return Item(id=strawberry.ID(f"{self.id}.c"))


@strawberry.type
class ItemEdge:
    node: Item


@strawberry.type
class ItemFacets:
    colour: int = 0
    size: int = 0


@strawberry.type
class ItemConnection:
    edges: list[ItemEdge]
    total_count: int = 0  # the aggregates of the real connections: counts over every row found
    facets: ItemFacets = strawberry.field(default_factory=ItemFacets)


@strawberry.type
class Query:
    @strawberry.field
    def items(self, info: strawberry.Info, first: int | None = None, last: int | None = None) -> ItemConnection:
        _record(info, "items")
        size = first if first is not None else last or 0
        return ItemConnection(edges=[ItemEdge(node=Item(id=strawberry.ID(f"i{i}"))) for i in range(size)])

    @strawberry.field
    def parts(self, info: strawberry.Info, first: int | None = None, last: int | None = None) -> PartConnection:
        return _parts(info, first, last)

    @strawberry.field
    def item(self, info: strawberry.Info) -> Item:
        _record(info, "item")
        return Item(id=strawberry.ID("i"))

    @strawberry.field
    def boom(self, info: strawberry.Info) -> str:
        _record(info, "boom")
        raise RuntimeError("connection to 10.0.0.7:5432 refused")

    @strawberry.field
    def missing(self, info: strawberry.Info) -> str:
        _record(info, "missing")
        raise NotFound("no such dataset", field="id")


def build_schema(settings: Settings, limits: Limits = Limits(), budget: Budget | None = None) -> strawberry.Schema:  # noqa: B008
    return strawberry.Schema(query=Query, extensions=protection(settings, limits, budget=budget))
