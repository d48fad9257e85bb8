// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/", "dist/", "coverage/", ".ci/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: "readonly", console: "readonly", URL: "readonly", setTimeout: "readonly", clearTimeout: "readonly", setInterval: "readonly", clearInterval: "readonly", Buffer: "readonly", fetch: "readonly", AbortController: "readonly", AbortSignal: "readonly", TextEncoder: "readonly", TextDecoder: "readonly", structuredClone: "readonly" } },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" }],
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "inline-type-imports" }],
      "no-console": "error",
    },
  },
  {
    // Decide from the truth: adapters, the store and the engine branch on error names and codes,
    // then read the world (a provider's list, DescribeSecret, the token endpoint); never on an
    // error's message text, which vendors may word otherwise any day (docs/provider-assumptions.md).
    files: ["src/providers/**", "src/stores/**", "src/rotation/**", "src/leak/**", "src/offboarding/**"],
    rules: {
      "no-restricted-syntax": [
        "error",
        ...[
          'CallExpression[callee.property.name=/^(test|exec)$/] > MemberExpression.arguments[property.name="message"]',
          'CallExpression[callee.property.name=/^(test|exec)$/] > LogicalExpression.arguments > MemberExpression.left[property.name="message"]',
          'CallExpression[callee.object.property.name="message"][callee.property.name=/^(includes|startsWith|endsWith|match|search|indexOf)$/]',
        ].map((selector) => ({ selector, message: "Do not decide from an error's message text: branch on its name or code, then read the world." })),
      ],
    },
  },
  {
    // The CLI, benchmarks and test fakes' standalone entry points talk to a terminal.
    files: ["src/cli/**", "bench/**", "bin/**", "test/fakes/**/main.ts"],
    rules: { "no-console": "off" },
  },
);
