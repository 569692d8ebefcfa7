// Bind with runtime "nodejs" and handler "app.handler" (code directory: this folder).
exports.handler = async (event) => ({ message: `hello, ${(event && event.name) || 'world'}` });
