// Loading a handler as Lambda's Java runtime does: `package.Class` implementing
// RequestStreamHandler or RequestHandler<I, O>, or `package.Class::method` with one of
// the signatures Lambda accepts; events and results (de)serialised with Jackson set up
// as Lambda's serializer is.
package natsfn.runtime;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import com.amazonaws.services.lambda.runtime.RequestStreamHandler;
import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.StreamWriteFeature;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.MapperFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

final class Handlers {
    private Handlers() {}

    /** A failure to load the handler, with the error type Lambda reports for it. */
    static final class LoadError extends Exception {
        private static final long serialVersionUID = 1L;
        final String errorType;

        LoadError(String errorType, String message, Throwable cause) {
            super(message, cause);
            this.errorType = errorType;
        }
    }

    /** The event could not be read as the handler's input type. */
    static final class EventError extends Exception {
        private static final long serialVersionUID = 1L;

        EventError(Throwable cause) {
            super("An error occurred during JSON parsing", cause);
        }
    }

    /** A loaded handler: runs one invocation, returning what is to be serialised. */
    interface Handler {
        Object invoke(byte[] event, Context context) throws Throwable;
    }

    /** A stream handler's output: the reply as it was written, not serialised. */
    static final class Raw {
        final byte[] bytes;

        Raw(byte[] bytes) {
            this.bytes = bytes;
        }
    }

    /** Lambda's serializer settings (aws-lambda-java-serialization's JacksonFactory). */
    static ObjectMapper mapper() {
        JsonFactory factory = JsonFactory.builder()
                .enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS)
                .enable(JsonReadFeature.ALLOW_LEADING_ZEROS_FOR_NUMBERS)
                .enable(JsonReadFeature.ALLOW_SINGLE_QUOTES)
                .enable(JsonReadFeature.ALLOW_BACKSLASH_ESCAPING_ANY_CHARACTER)
                .enable(JsonReadFeature.ALLOW_UNESCAPED_CONTROL_CHARS)
                .enable(JsonReadFeature.ALLOW_UNQUOTED_FIELD_NAMES)
                .disable(StreamReadFeature.AUTO_CLOSE_SOURCE)
                .enable(StreamWriteFeature.IGNORE_UNKNOWN)
                .disable(StreamWriteFeature.AUTO_CLOSE_CONTENT)
                .disable(StreamWriteFeature.AUTO_CLOSE_TARGET)
                .disable(StreamWriteFeature.FLUSH_PASSED_TO_STREAM)
                .build();
        return JsonMapper.builder(factory)
                .enable(MapperFeature.USE_STD_BEAN_NAMING)
                .disable(MapperFeature.AUTO_DETECT_CREATORS)
                .disable(MapperFeature.INFER_PROPERTY_MUTATORS)
                .disable(MapperFeature.USE_GETTERS_AS_SETTERS)
                .disable(SerializationFeature.FAIL_ON_EMPTY_BEANS)
                .disable(SerializationFeature.CLOSE_CLOSEABLE)
                .enable(DeserializationFeature.ACCEPT_EMPTY_ARRAY_AS_NULL_OBJECT)
                .enable(DeserializationFeature.ACCEPT_EMPTY_STRING_AS_NULL_OBJECT)
                .enable(DeserializationFeature.ACCEPT_SINGLE_VALUE_AS_ARRAY)
                .enable(DeserializationFeature.READ_UNKNOWN_ENUM_VALUES_AS_NULL)
                .enable(DeserializationFeature.UNWRAP_SINGLE_VALUE_ARRAYS)
                .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .disable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
                .disable(DeserializationFeature.FAIL_ON_NUMBERS_FOR_ENUMS)
                .serializationInclusion(JsonInclude.Include.NON_NULL)
                .build();
    }

    /** Loads (without initialising) the handler's class, if it is there: the real load
     * then finds it loaded. */
    static void preload(String handler, ClassLoader loader) {
        int colons = handler.lastIndexOf("::");
        try {
            Class.forName(colons < 0 ? handler : handler.substring(0, colons), false, loader);
        } catch (ClassNotFoundException | LinkageError e) {
            // reported by load()
        }
    }

    /** Loads `handler` (the binding's string) from `loader`. */
    static Handler load(String handler, ClassLoader loader, ObjectMapper mapper) throws LoadError {
        int colons = handler.lastIndexOf("::");
        String className = colons < 0 ? handler : handler.substring(0, colons);
        String methodName = colons < 0 ? null : handler.substring(colons + 2);
        if (className.isEmpty() || (methodName != null && methodName.isEmpty())) {
            throw new LoadError("Runtime.MalformedHandlerName", "Invalid handler: `" + handler + "'", null);
        }
        Class<?> cls;
        try {
            cls = Class.forName(className, true, loader);
        } catch (ClassNotFoundException e) {
            throw new LoadError(e.getClass().getName(), "Class not found: " + className, e);
        } catch (LinkageError e) {
            Throwable cause = e instanceof ExceptionInInitializerError && e.getCause() != null ? e.getCause() : e;
            throw new LoadError(cause.getClass().getName(), "Error loading class " + className
                    + (cause.getMessage() == null ? "" : ": " + cause.getMessage()), cause);
        }
        if (methodName != null) {
            return method(cls, methodName, mapper);
        }
        if (RequestStreamHandler.class.isAssignableFrom(cls)) {
            RequestStreamHandler h = (RequestStreamHandler) instance(cls);
            return (event, ctx) -> {
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                h.handleRequest(new ByteArrayInputStream(event), out, ctx);
                return new Raw(out.toByteArray());
            };
        }
        if (RequestHandler.class.isAssignableFrom(cls)) {
            @SuppressWarnings("unchecked")
            RequestHandler<Object, Object> h = (RequestHandler<Object, Object>) instance(cls);
            ObjectReader reader = mapper.readerFor(mapper.constructType(inputType(cls)));
            return (event, ctx) -> h.handleRequest(read(reader, event), ctx);
        }
        throw new LoadError("Runtime.HandlerNotFound",
                "Class does not implement an appropriate handler interface: " + cls.getName(), null);
    }

    private static Object read(ObjectReader reader, byte[] event) throws EventError {
        try {
            return reader.readValue(event);
        } catch (java.io.IOException e) {
            throw new EventError(e);
        }
    }

    private static Object instance(Class<?> cls) throws LoadError {
        Constructor<?> constructor;
        try {
            constructor = cls.getConstructor();
        } catch (NoSuchMethodException e) {
            String why = cls.getEnclosingClass() != null && !Modifier.isStatic(cls.getModifiers())
                    ? " cannot be instantiated because it is a non-static inner class"
                    : " has no public zero-argument constructor";
            throw new LoadError("java.lang.Exception", "Class " + cls.getName() + why, null);
        }
        try {
            return constructor.newInstance();
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause() == null ? e : e.getCause();
            throw new LoadError(cause.getClass().getName(),
                    cause.getMessage() == null ? cause.getClass().getName() : cause.getMessage(), cause);
        } catch (ReflectiveOperationException e) {
            throw new LoadError(e.getClass().getName(), "Class " + cls.getName() + ": " + e.getMessage(), e);
        }
    }

    /** I of the RequestHandler<I, O> that `cls` implements, type variables resolved. */
    private static Type inputType(Class<?> cls) {
        Type found = find(cls, new HashMap<>());
        return found == null ? Object.class : found;
    }

    private static Type find(Type type, Map<TypeVariable<?>, Type> bound) {
        Class<?> raw;
        if (type instanceof ParameterizedType) {
            ParameterizedType p = (ParameterizedType) type;
            raw = (Class<?>) p.getRawType();
            TypeVariable<?>[] vars = raw.getTypeParameters();
            Type[] args = p.getActualTypeArguments();
            Map<TypeVariable<?>, Type> next = new HashMap<>();
            for (int i = 0; i < vars.length && i < args.length; i++) {
                next.put(vars[i], resolve(args[i], bound));
            }
            bound = next;
            if (raw == RequestHandler.class) {
                Type input = bound.get(vars[0]);
                return input instanceof TypeVariable ? Object.class : input;
            }
        } else if (type instanceof Class) {
            raw = (Class<?>) type;
            if (raw == RequestHandler.class) {
                return Object.class;
            }
        } else {
            return null;
        }
        List<Type> supers = new ArrayList<>(Arrays.asList(raw.getGenericInterfaces()));
        if (raw.getGenericSuperclass() != null) {
            supers.add(raw.getGenericSuperclass());
        }
        for (Type s : supers) {
            Type found = find(s, bound);
            if (found != null) {
                return found;
            }
        }
        return null;
    }

    private static Type resolve(Type t, Map<TypeVariable<?>, Type> bound) {
        if (t instanceof TypeVariable && bound.containsKey(t)) {
            return bound.get(t);
        }
        return t;
    }

    // ---- `Class::method` handlers -------------------------------------------------

    private static boolean isContext(Class<?> c) {
        return Context.class.isAssignableFrom(c);
    }

    /** Lambda's preference: more parameters first, then those ending with a Context. */
    private static final Comparator<Method> PRIORITY = Comparator
            .comparingInt((Method m) -> -m.getParameterCount())
            .thenComparing(m -> {
                Class<?>[] p = m.getParameterTypes();
                return p.length > 0 && isContext(p[p.length - 1]) ? 0 : 1;
            });

    private static Handler method(Class<?> cls, String name, ObjectMapper mapper) throws LoadError {
        List<Method> candidates = new ArrayList<>();
        for (Method m : cls.getMethods()) {
            if (m.getName().equals(name) && !m.isBridge() && !m.isSynthetic()) {
                candidates.add(m);
            }
        }
        candidates.sort(PRIORITY);
        for (Method m : candidates) {
            Handler h = forMethod(cls, m, mapper);
            if (h != null) {
                return h;
            }
        }
        throw new LoadError("Runtime.HandlerNotFound", "No public method named " + name
                + " with appropriate method signature found on class " + cls.getName(), null);
    }

    /** A handler calling `m`, or null when its signature is not one Lambda accepts. */
    private static Handler forMethod(Class<?> cls, Method m, ObjectMapper mapper) throws LoadError {
        Class<?>[] p = m.getParameterTypes();
        Type[] generic = m.getGenericParameterTypes();
        boolean stream = p.length >= 1 && (p[0] == InputStream.class || p[0] == OutputStream.class);
        // Which argument is which: 'I' input stream, 'O' output stream, 'C' context, 'E' event.
        char[] roles = new char[p.length];
        for (int i = 0; i < p.length; i++) {
            if (p[i] == InputStream.class) {
                roles[i] = 'I';
            } else if (p[i] == OutputStream.class) {
                roles[i] = 'O';
            } else if (isContext(p[i])) {
                roles[i] = 'C';
            } else {
                roles[i] = 'E';
            }
        }
        String shape = new String(roles);
        List<String> accepted = stream
                ? List.of("IOC", "IO", "OC", "IC", "I", "O")
                : List.of("EC", "E", "C", "");
        if (!accepted.contains(shape)) {
            return null;
        }
        Object target = Modifier.isStatic(m.getModifiers()) ? null : instance(cls);
        int eventAt = shape.indexOf('E');
        ObjectReader reader = eventAt < 0 ? null : mapper.readerFor(mapper.constructType(generic[eventAt]));
        boolean returnsNothing = m.getReturnType() == void.class || m.getReturnType() == Void.class;
        return (event, ctx) -> {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            Object[] args = new Object[roles.length];
            for (int i = 0; i < roles.length; i++) {
                switch (roles[i]) {
                    case 'I':
                        args[i] = new ByteArrayInputStream(event);
                        break;
                    case 'O':
                        args[i] = out;
                        break;
                    case 'C':
                        args[i] = ctx;
                        break;
                    default:
                        args[i] = read(reader, event);
                }
            }
            Object result;
            try {
                result = m.invoke(target, args);
            } catch (InvocationTargetException e) {
                throw e.getCause() == null ? e : e.getCause();
            }
            if (stream) {
                return new Raw(out.toByteArray());
            }
            return returnsNothing ? null : result;
        };
    }
}
