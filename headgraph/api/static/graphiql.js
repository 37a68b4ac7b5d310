// headgraph's GraphiQL page: the vendored GraphiQL 3 (globals React, ReactDOM and GraphiQL
// from vendor/graphiql/) pointed at this server's own /graphql. The query and variables
// being edited are kept in the URL (?q=...&variables=...), so a query can be linked; the
// `q` name leaves `query` to GET /graphql?query=..., which runs a query.
"use strict";

(() => {
  // The one <style> element GraphiQL adds (its dialogs' scroll lock) carries this nonce,
  // which the page's Content-Security-Policy allows; the server makes one per response.
  window.__webpack_nonce__ = document.currentScript.nonce;

  const EXAMPLE = `# headgraph: the composition graph of transformer heads, read-only.
#
# Ctrl-Enter runs the query, Ctrl-Space completes a name; the book icon
# (top left) browses the schema, also at /schema.graphql.
#
# Stored models, then one node's strongest K-composition feeders:
{
  models { name nLayers nHeads nEdges }
}

# query Feeders {
#   node(model: "toy", name: "L1H2") {
#     roles
#     feeders(kind: K, top: 3) { source { name } score z }
#   }
# }
`;
  const params = new URLSearchParams(location.search);
  const endpoint = location.origin + location.pathname; // this page's own path: /graphql

  function remember(key, value) {
    if (value) params.set(key, value); else params.delete(key);
    const search = params.toString();
    history.replaceState(null, "", search ? `?${search}` : location.pathname);
  }

  const fetcher = GraphiQL.createFetcher({ url: endpoint });
  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(React.createElement(GraphiQL, {
    fetcher,
    defaultQuery: EXAMPLE,
    query: params.get("q") ?? undefined,
    variables: params.get("variables") ?? undefined,
    onEditQuery: (text) => remember("q", text),
    onEditVariables: (text) => remember("variables", text),
    defaultEditorToolsVisibility: false,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: false, // an Authorization header stays out of localStorage
  }));
})();
