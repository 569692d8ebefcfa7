// natsfn's own copy of aws-lambda-java-core's class (same names and signatures): the
// logger a handler can reach without its Context. Each log() call is one log line of
// the running invocation (a newline is added when the message has none).
package com.amazonaws.services.lambda.runtime;

import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

public final class LambdaRuntime {
    private LambdaRuntime() {}

    private static final LambdaLogger logger = new LambdaLogger() {
        public void log(String message) {
            PrintStream out = System.out;
            String text = String.valueOf(message);
            if (text.endsWith("\n")) {
                out.print(text);
            } else {
                out.println(text);
            }
            out.flush();
        }

        public void log(byte[] message) {
            log(new String(message, StandardCharsets.UTF_8));
        }
    };

    public static LambdaLogger getLogger() {
        return logger;
    }
}
