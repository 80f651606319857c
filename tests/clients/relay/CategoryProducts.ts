// Infinite scroll over a category's products: @refetchable through Query.node(id:), and a
// @connection Relay appends pages to.
import { graphql } from "relay-runtime";

export const CategoryProducts = graphql`
  fragment CategoryProducts_category on Category
  @refetchable(queryName: "CategoryProductsPaginationQuery")
  @argumentDefinitions(
    count: { type: "Int", defaultValue: 24 }
    cursor: { type: "String" }
  ) {
    products(first: $count, after: $cursor) @connection(key: "CategoryProducts_products") {
      edges {
        node {
          id
          ...ProductTile_product
        }
      }
    }
  }
`;
