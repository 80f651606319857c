// A category page built from Relay fragments (compiled by relay-compiler in tests/test_codegen.py).
import { graphql } from "relay-runtime";

export const CategoryRouteQuery = graphql`
  query CategoryRouteQuery($slug: String!) {
    category(slug: $slug) {
      id
      name
      ...CategoryProducts_category
    }
  }
`;
