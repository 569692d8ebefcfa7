# Bind with runtime "python3" and handler "app.handler" (code directory: this folder).


def handler(event, context):
    name = event.get("name") if isinstance(event, dict) else None
    return {"message": f"hello, {name or 'world'}"}
