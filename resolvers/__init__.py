"""Plain functions: GraphQL arguments -> data-layer calls -> records the schema renders."""
