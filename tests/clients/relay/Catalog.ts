// The whole catalog with search, paginated from the root (a @connection on Query.products).
import { graphql } from "relay-runtime";

export const CatalogQuery = graphql`
  query CatalogQuery($search: String) {
    ...Catalog_query @arguments(search: $search)
  }
`;

export const Catalog = graphql`
  fragment Catalog_query on Query
  @refetchable(queryName: "CatalogPaginationQuery")
  @argumentDefinitions(
    count: { type: "Int", defaultValue: 24 }
    cursor: { type: "String" }
    search: { type: "String" }
  ) {
    products(first: $count, after: $cursor, search: $search)
      @connection(key: "Catalog_products", filters: ["search"]) {
      totalCount
      edges {
        node {
          id
          ...ProductTile_product
        }
      }
    }
  }
`;
