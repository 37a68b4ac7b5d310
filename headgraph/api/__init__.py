"""The read side's front doors: the GraphQL API, its HTTP server and CLI, the Python API.

``settings``  the declared limits (one table)     ``schema``   Query root, build_schema
``types``     GraphQL types over frozen records   ``loaders``  per-request DataLoaders
``context``   per-request session and loaders     ``limits``   depth/alias/token/top caps
``errors``    stable ``extensions.code``          ``execute``  one request, shared by all
``app``       the ASGI app (create_app)           ``server``   serve(db) under uvicorn
``commands``  ``headgraph serve`` / ``query``     ``python``   ``headgraph.open(db)``

Nothing here imports torch: a server starts from the database alone.
"""
