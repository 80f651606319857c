// graphql-codegen over the committed schema and the storefront/admin operations.
// CODEGEN_OUT (tests/test_codegen.py sets it to a temporary directory) overrides the output.
import type { CodegenConfig } from "@graphql-codegen/cli";

const out = process.env.CODEGEN_OUT ?? "./__generated__";

const config: CodegenConfig = {
  schema: "../../schema.graphql",
  documents: ["storefront/**/*.graphql", "admin/**/*.graphql"],
  emitLegacyCommonJSImports: false,
  generates: {
    [`${out}/graphql.ts`]: {
      plugins: ["typescript", "typescript-operations"],
      config: {
        strictScalars: true,
        scalars: { DateTime: "string", Decimal: "string" },
        enumsAsTypes: true,
        avoidOptionals: { field: true },
      },
    },
  },
  config: { noExport: false },
};

export default config;
