// natsfn Java worker bootstrap: loads the handler named by _HANDLER from the function's
// class path, answers Ready (or InitError), then serves Invoke frames one at a time on
// the private channel (runtimes/README.md) until it closes.
package natsfn.runtime;

import com.amazonaws.services.lambda.runtime.ClientContext;
import com.amazonaws.services.lambda.runtime.CognitoIdentity;
import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.LambdaLogger;
import com.amazonaws.services.lambda.runtime.LambdaRuntime;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import com.fasterxml.jackson.core.JsonParseException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectWriter;
import java.io.BufferedOutputStream;
import java.io.File;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.MalformedURLException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public final class Bootstrap {
    private Bootstrap() {}

    private static final String OWN_PACKAGE = "natsfn.runtime.";

    public static void main(String[] args) throws Throwable {
        if (args.length > 0 && args[0].equals("--train")) {
            train();
            return;
        }
        // stdout/stderr are pipes read line by line by the dispatcher: UTF-8, flushed at
        // each line, and before every answer.
        System.setOut(new PrintStream(new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 8192),
                true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(new BufferedOutputStream(new FileOutputStream(FileDescriptor.err), 8192),
                true, StandardCharsets.UTF_8));
        Wire wire = Wire.open(Integer.parseInt(System.getenv("NATSFN_CHANNEL_FD")));
        String taskRoot = env("LAMBDA_TASK_ROOT", System.getProperty("user.dir"));
        String handlerName = env("_HANDLER", "");
        // Jackson's set-up (most of it the JDK's date and locale data) is the larger part
        // of a cold start: it runs on a thread of its own while the handler's class loads.
        ObjectMapper[] built = new ObjectMapper[1];
        Thread mapperThread = new Thread(() -> built[0] = Handlers.mapper(), "natsfn-jackson");
        mapperThread.start();
        Handlers.Handler handler;
        try {
            ClassLoader loader = new UserLoader(classPath(taskRoot, env("NATSFN_LAYERS", "")));
            Thread.currentThread().setContextClassLoader(loader);
            Handlers.preload(handlerName, loader);
            mapperThread.join();
            handler = Handlers.load(handlerName, loader, built[0]);
        } catch (Handlers.LoadError e) {
            if (e.getCause() != null) {
                filter(e.getCause());
            }
            List<String> trace = e.getCause() == null ? List.of() : trace(e.getCause());
            log(e.getMessage(), e.getCause() == null ? null : e.errorType, e.getCause());
            Map<String, Object> fields = new LinkedHashMap<>();
            fields.put("error_type", e.errorType);
            fields.put("error_message", e.getMessage());
            fields.put("stack_trace", trace);
            flush();
            wire.write("InitError", fields);
            System.exit(1);
            return;
        }
        wire.write("Ready", Map.of());
        serve(wire, handler, built[0].writer());
        System.exit(0);
    }

    private static String env(String name, String otherwise) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? otherwise : v;
    }

    private static void serve(Wire wire, Handlers.Handler handler, ObjectWriter writer) throws Exception {
        String functionName = env("AWS_LAMBDA_FUNCTION_NAME", "");
        String version = env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
        String group = env("AWS_LAMBDA_LOG_GROUP_NAME", "");
        String stream = env("AWS_LAMBDA_LOG_STREAM_NAME", "");
        int memory = Integer.parseInt(env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"));
        byte[] empty = "{}".getBytes(StandardCharsets.UTF_8);
        while (true) {
            Wire.Frame frame = wire.read();
            if (frame == null) {
                return;
            }
            if (!frame.type.equals("Invoke")) {
                continue; // unknown frame types are ignored (forward compatibility)
            }
            Map<String, Object> f = frame.fields;
            String id = String.valueOf(f.getOrDefault("id", ""));
            Object payload = f.get("payload");
            byte[] event = payload instanceof byte[] && ((byte[]) payload).length > 0 ? (byte[]) payload : empty;
            // timeout_ms counts from now: the frame may have waited behind the one before.
            long timeout = f.get("timeout_ms") instanceof Long ? (Long) f.get("timeout_ms") : 0;
            long deadline = timeout > 0 ? System.currentTimeMillis() + timeout
                    : f.get("deadline_ms") instanceof Long ? (Long) f.get("deadline_ms") : 0;
            Object arn = f.get("invoked_function_arn");
            Ctx ctx = new Ctx(id, deadline, arn == null ? "" : arn.toString(), functionName, version, group, stream,
                    memory);
            byte[] out;
            try {
                Object result = handler.invoke(event, ctx);
                if (result instanceof Handlers.Raw) {
                    out = ((Handlers.Raw) result).bytes;
                } else {
                    try {
                        out = writer.writeValueAsBytes(result);
                    } catch (Exception e) {
                        throw new RuntimeException("An error occurred during JSON serialization of response", e);
                    }
                }
            } catch (Handlers.EventError e) {
                if (e.getCause() instanceof JsonParseException) {
                    answerError(wire, "RequestError", id, "Runtime.UnmarshalError",
                            "Unable to unmarshal input: " + e.getCause().getMessage(), List.of());
                } else {
                    fail(wire, id, new RuntimeException(e.getMessage(), e.getCause()));
                }
                continue;
            } catch (Throwable t) {
                fail(wire, id, t);
                continue;
            }
            flush();
            Map<String, Object> fields = new LinkedHashMap<>();
            fields.put("id", id);
            fields.put("payload", out);
            try {
                wire.write("Response", fields);
            } catch (Wire.FrameTooLarge e) {
                answerError(wire, "Error", id, "Function.ResponseSizeTooLarge", "Response payload size ("
                        + out.length + " bytes) exceeded maximum allowed payload size", List.of());
            }
        }
    }

    /** The handler threw: logged (as Lambda's runtime logs it) and answered. */
    private static void fail(Wire wire, String id, Throwable t) throws Exception {
        String message = t.getLocalizedMessage() == null ? t.getClass().getName() : t.getLocalizedMessage();
        filter(t);
        log(message, t.getClass().getName(), t);
        answerError(wire, "Error", id, t.getClass().getName(), message, trace(t));
    }

    private static void answerError(Wire wire, String frame, String id, String type, String message,
            List<String> trace) throws Exception {
        flush();
        Map<String, Object> fields = new LinkedHashMap<>();
        fields.put("id", id);
        fields.put("error_type", type);
        fields.put("error_message", message);
        fields.put("stack_trace", trace);
        wire.write(frame, fields);
    }

    private static void flush() {
        System.out.flush();
        System.err.flush();
    }

    /** `message: type` and the stack trace, on stdout: the function's log. */
    private static void log(String message, String type, Throwable t) {
        StringBuilder text = new StringBuilder(message);
        if (type != null) {
            text.append(": ").append(type);
        }
        if (t != null) {
            StringWriter trace = new StringWriter();
            t.printStackTrace(new PrintWriter(trace));
            text.append('\n').append(trace.toString().stripTrailing());
        }
        System.out.println(text);
    }

    /** Stack frames as Lambda's Java runtime reports them: `Class.method(File.java:line)`. */
    private static List<String> trace(Throwable t) {
        List<String> lines = new ArrayList<>();
        for (StackTraceElement e : t.getStackTrace()) {
            lines.add(e.toString());
        }
        return lines;
    }

    /** Drops the bootstrap's own frames (and the reflection calling into the handler), as
     * Lambda's runtime drops its own, through the causes too. */
    private static void filter(Throwable t) {
        java.util.Set<Throwable> seen = java.util.Collections.newSetFromMap(new java.util.IdentityHashMap<>());
        for (Throwable c = t; c != null && seen.add(c); c = c.getCause()) {
            StackTraceElement[] frames = c.getStackTrace();
            int end = frames.length;
            for (int i = 0; i < frames.length; i++) {
                if (frames[i].getClassName().startsWith(OWN_PACKAGE)) {
                    end = i;
                    break;
                }
            }
            while (end > 0 && isReflection(frames[end - 1].getClassName())) {
                end--;
            }
            if (end < frames.length) {
                c.setStackTrace(Arrays.copyOf(frames, end));
            }
        }
    }

    private static boolean isReflection(String cls) {
        return cls.startsWith("jdk.internal.reflect.") || cls.equals("java.lang.reflect.Method");
    }

    // ---- the function's class path ------------------------------------------------

    /** The code dir's classes, its jars and those of its lib/, then the layers'
     * `java/lib` jars, the last layer first (a later layer wins over an earlier one). */
    static URL[] classPath(String taskRoot, String layers) throws MalformedURLException {
        List<URL> urls = new ArrayList<>();
        File root = new File(taskRoot);
        urls.add(root.toURI().toURL());
        jars(root, urls);
        jars(new File(root, "lib"), urls);
        List<String> layerDirs = new ArrayList<>(Arrays.asList(layers.split(":")));
        java.util.Collections.reverse(layerDirs);
        for (String layer : layerDirs) {
            if (!layer.isEmpty()) {
                jars(new File(new File(layer, "java"), "lib"), urls);
            }
        }
        return urls.toArray(new URL[0]);
    }

    private static void jars(File dir, List<URL> urls) throws MalformedURLException {
        File[] files = dir.listFiles((d, name) -> name.endsWith(".jar"));
        if (files == null) {
            return;
        }
        Arrays.sort(files);
        for (File f : files) {
            if (f.isFile()) {
                urls.add(f.toURI().toURL());
            }
        }
    }

    /**
     * The function's own loader. It sees the platform classes and natsfn's
     * com.amazonaws.services.lambda.runtime classes (those first, so a copy of
     * aws-lambda-java-core bundled in the function's jar links against ours), never the
     * bootstrap or its Jackson: a function brings its own libraries, as on Lambda.
     */
    static final class UserLoader extends URLClassLoader {
        private static final ClassLoader RUNTIME = Bootstrap.class.getClassLoader();

        static {
            registerAsParallelCapable();
        }

        UserLoader(URL[] urls) {
            super(urls, ClassLoader.getPlatformClassLoader());
        }

        @Override
        protected Class<?> loadClass(String name, boolean resolve) throws ClassNotFoundException {
            if (name.startsWith("com.amazonaws.services.lambda.runtime.")) {
                String rest = name.substring("com.amazonaws.services.lambda.runtime.".length());
                if (rest.indexOf('.') < 0 || rest.startsWith("logging.") && rest.indexOf('.', 8) < 0) {
                    try {
                        return RUNTIME.loadClass(name);
                    } catch (ClassNotFoundException e) {
                        // not one natsfn provides: the function's own
                    }
                }
            }
            return super.loadClass(name, resolve);
        }
    }

    // ---- the context ------------------------------------------------------------

    static final class Ctx implements Context {
        private final String id;
        private final long deadline;
        private final String arn;
        private final String name;
        private final String version;
        private final String group;
        private final String stream;
        private final int memory;

        Ctx(String id, long deadline, String arn, String name, String version, String group, String stream,
                int memory) {
            this.id = id;
            this.deadline = deadline;
            this.arn = arn;
            this.name = name;
            this.version = version;
            this.group = group;
            this.stream = stream;
            this.memory = memory;
        }

        public String getAwsRequestId() {
            return id;
        }

        public String getLogGroupName() {
            return group;
        }

        public String getLogStreamName() {
            return stream;
        }

        public String getFunctionName() {
            return name;
        }

        public String getFunctionVersion() {
            return version;
        }

        public String getInvokedFunctionArn() {
            return arn;
        }

        public CognitoIdentity getIdentity() {
            return null;
        }

        public ClientContext getClientContext() {
            return null;
        }

        public int getRemainingTimeInMillis() {
            return (int) Math.max(0, Math.min(Integer.MAX_VALUE, deadline - System.currentTimeMillis()));
        }

        public int getMemoryLimitInMB() {
            return memory;
        }

        public LambdaLogger getLogger() {
            return LambdaRuntime.getLogger();
        }

        @Override
        public String toString() {
            return "Context{awsRequestId=" + id + ", functionName=" + name + "}";
        }
    }

    // ---- class-data sharing --------------------------------------------------------

    /** A bean for training. */
    public static final class Sample {
        private String name;
        private int count;

        public String getName() {
            return name;
        }

        public void setName(String name) {
            this.name = name;
        }

        public int getCount() {
            return count;
        }

        public void setCount(int count) {
            this.count = count;
        }
    }

    public static final class Trainee implements RequestHandler<Map<String, Object>, Sample> {
        public Sample handleRequest(Map<String, Object> event, Context context) {
            Sample s = new Sample();
            s.setName(String.valueOf(event.get("name")));
            s.setCount(event.size());
            return s;
        }

        public static String echo(Sample in, Context context) {
            return in.getName();
        }
    }

    /**
     * Runs what a worker runs at start-up and for its first invocations, without a
     * channel, so that the node can archive the classes it loaded (-XX:ArchiveClassesAtExit)
     * and later workers map them instead of loading them.
     */
    private static void train() throws Throwable {
        ObjectMapper mapper = Handlers.mapper();
        ObjectWriter writer = mapper.writer();
        ClassLoader own = Bootstrap.class.getClassLoader();
        Ctx ctx = new Ctx("train", System.currentTimeMillis() + 1000, "arn", "f", "1", "g", "s", 128);
        byte[] event = "{\"name\":\"x\",\"list\":[1,2.5,\"s\",true,null],\"nested\":{\"a\":1}}"
                .getBytes(StandardCharsets.UTF_8);
        for (String h : List.of(Trainee.class.getName(), Trainee.class.getName() + "::echo",
                Trainee.class.getName() + "::handleRequest")) {
            Object result = Handlers.load(h, own, mapper).invoke(event, ctx);
            writer.writeValueAsBytes(result);
        }
        writer.writeValueAsBytes(mapper.readValue(event, Object.class));
        try {
            Handlers.load("natsfn.runtime.Missing", own, mapper);
        } catch (Handlers.LoadError expected) {
            trace(expected);
        }
        new UserLoader(classPath(System.getProperty("java.io.tmpdir"), "")).close();
        Wire.Encoder e = new Wire.Encoder();
        Map<String, Object> fields = new LinkedHashMap<>();
        fields.put("id", "train");
        fields.put("payload", event);
        fields.put("stack_trace", List.of("a"));
        e.value(fields);
        new Wire.Decoder(Arrays.copyOfRange(e.buf, 4, e.size)).value();
        StringWriter sw = new StringWriter();
        new RuntimeException("train").printStackTrace(new PrintWriter(sw));
        ctx.getLogger();
    }
}
