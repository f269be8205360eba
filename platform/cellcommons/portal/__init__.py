"""The download portal: server-rendered pages for researchers and stewards, calling the same services as GraphQL."""
