// natsfn's own copy of aws-lambda-java-core's interface (same names and signatures).
package com.amazonaws.services.lambda.runtime;

public interface RequestHandler<I, O> {
    O handleRequest(I input, Context context);
}
