// One product tile; refetchable on its own (e.g. after a stock change).
import { graphql } from "relay-runtime";

export const ProductTile = graphql`
  fragment ProductTile_product on Product @refetchable(queryName: "ProductTileRefetchQuery") {
    id
    name
    slug
    isAvailable
    priceRange {
      start {
        amount
        currency
      }
    }
    images {
      url
      alt
    }
  }
`;
