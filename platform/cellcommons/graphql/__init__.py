"""The GraphQL API (Strawberry): types, queries, dataloaders, limits."""
