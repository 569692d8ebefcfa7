package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.LinkedHashMap;
import java.util.Map;

/** The smallest natsfn Java function: a Lambda RequestHandler, unchanged. */
public class Hello implements RequestHandler<Map<String, Object>, Map<String, Object>> {
    @Override
    public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
        Object name = event.getOrDefault("name", "world");
        context.getLogger().log("greeting " + name);
        Map<String, Object> reply = new LinkedHashMap<>();
        reply.put("message", "Hello, " + name + "!");
        reply.put("requestId", context.getAwsRequestId());
        return reply;
    }
}
