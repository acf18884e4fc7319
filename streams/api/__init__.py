"""The intelligence API (``foresight api``): REST, GraphQL, its services and its client."""
