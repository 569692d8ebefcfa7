// The java bootstrap's channel codec (Wire.java) against the golden frames.
//
// protocol/tests/frames/golden.json (the first argument) holds frames as the node writes
// and reads them. The bootstrap reads every frame the node may send (Invoke) as the
// golden bytes say, with Wire.read as it reads its channel; it writes every frame it
// sends (Ready, InitError, Response, Error, RequestError) as exactly the golden bytes,
// with Wire.write and the field maps Bootstrap.java builds; and Wire reads back every
// canonical frame. Not shipped with the bootstrap (actors/src/java.rs lists what is).
// Run (tests/it/golden_frames.rs does, in the integration tests):
//   javac -d OUT runtimes/java/natsfn/runtime/Wire.java runtimes/java/test/natsfn/runtime/WireGoldenTest.java
//   java -cp OUT natsfn.runtime.WireGoldenTest protocol/tests/frames/golden.json
// It needs the JDK only: the golden file is read by the small JSON reader below.
package natsfn.runtime;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

public final class WireGoldenTest {
    private static final List<String> failures = new ArrayList<>();
    private static int checks = 0;

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: WireGoldenTest GOLDEN_JSON");
            System.exit(2);
        }
        String text = Files.readString(Path.of(args[0]), StandardCharsets.UTF_8);
        Map<String, Object> doc = asMap(new Json(text).document());
        int toWorker = 0;
        int fromWorker = 0;
        TreeSet<String> written = new TreeSet<>();
        for (Object item : (List<?>) doc.get("vectors")) {
            Map<String, Object> v = asMap(item);
            String name = (String) v.get("name");
            boolean isToWorker = "to_worker".equals(v.get("direction"));
            boolean canonical = Boolean.TRUE.equals(v.get("canonical"));
            Map<String, Object> frame = asMap(v.get("frame"));
            String kind = frame.keySet().iterator().next();
            Map<String, Object> fields = asMap(frame.get(kind));
            byte[] bytes = HexFormat.of().parseHex(((String) v.get("hex")).replaceAll("\\s+", ""));
            if (isToWorker) {
                toWorker++;
                readsAsTheBootstrapDoes(name, bytes, kind, fields, canonical);
            } else if (canonical) {
                fromWorker++;
                writesAsTheBootstrapDoes(name, bytes, kind, fields);
                readsAsTheBootstrapDoes(name, bytes, kind, fields, true);
                written.add(kind);
            }
        }
        check(toWorker >= 5, "to_worker vectors: " + toWorker);
        check(written.equals(new TreeSet<>(List.of("Error", "InitError", "Ready", "RequestError", "Response"))),
                "every frame the bootstrap sends has a vector: " + written);
        if (!failures.isEmpty()) {
            failures.forEach(f -> System.err.println("FAIL " + f));
            System.err.println(failures.size() + " of " + checks + " checks failed");
            System.exit(1);
        }
        System.out.println("ok: " + checks + " checks of " + toWorker + " to_worker and " + fromWorker
                + " from_worker golden frames");
    }

    /**
     * Wire.read of the whole frame (length prefix and all) gives the golden type and fields;
     * a frame that is not canonical need only carry the fields the reader knows.
     */
    private static void readsAsTheBootstrapDoes(String name, byte[] bytes, String kind, Map<String, Object> fields,
            boolean exact) throws IOException {
        Wire wire = new Wire(new ByteArrayInputStream(bytes), OutputStream.nullOutputStream());
        Wire.Frame frame;
        try {
            frame = wire.read();
        } catch (IOException e) {
            check(false, name + ": cannot read: " + e);
            return;
        }
        check(frame != null && frame.type.equals(kind), name + ": the frame type");
        if (frame == null) {
            return;
        }
        Map<String, Object> read = frame.fields;
        if (!exact) {
            read = new LinkedHashMap<>();
            for (String key : fields.keySet()) {
                read.put(key, frame.fields.get(key));
            }
        }
        check(same(read, fields), name + ": read " + show(frame.fields) + ", expected " + show(fields));
        check(wire.read() == null, name + ": the end of the stream after the frame");
    }

    /** Wire.write of the frame, fields in the bootstrap's order, gives the golden bytes. */
    private static void writesAsTheBootstrapDoes(String name, byte[] bytes, String kind, Map<String, Object> fields)
            throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        Wire wire = new Wire(InputStream.nullInputStream(), out);
        wire.write(kind, fields.isEmpty() ? Map.of() : fields);
        byte[] got = out.toByteArray();
        check(Arrays.equals(got, bytes), name + ": wrote " + HexFormat.of().formatHex(got) + ", golden "
                + HexFormat.of().formatHex(bytes));
    }

    private static void check(boolean ok, String what) {
        checks++;
        if (!ok) {
            failures.add(what);
        }
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> asMap(Object o) {
        return (Map<String, Object>) o;
    }

    /** Deep equality of decoded values (Long, String, byte[], List, Map, Boolean, null). */
    private static boolean same(Object a, Object b) {
        if (a instanceof byte[] && b instanceof byte[]) {
            return Arrays.equals((byte[]) a, (byte[]) b);
        }
        if (a instanceof List && b instanceof List) {
            List<?> x = (List<?>) a;
            List<?> y = (List<?>) b;
            if (x.size() != y.size()) {
                return false;
            }
            for (int i = 0; i < x.size(); i++) {
                if (!same(x.get(i), y.get(i))) {
                    return false;
                }
            }
            return true;
        }
        if (a instanceof Map && b instanceof Map) {
            Map<?, ?> x = (Map<?, ?>) a;
            Map<?, ?> y = (Map<?, ?>) b;
            if (!x.keySet().equals(y.keySet())) {
                return false;
            }
            for (Object k : x.keySet()) {
                if (!same(x.get(k), y.get(k))) {
                    return false;
                }
            }
            return true;
        }
        return a == null ? b == null : a.equals(b);
    }

    private static String show(Object o) {
        if (o instanceof byte[]) {
            return "bin:" + HexFormat.of().formatHex((byte[]) o);
        }
        if (o instanceof Map) {
            StringBuilder s = new StringBuilder("{");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) {
                s.append(s.length() > 1 ? ", " : "").append(e.getKey()).append('=').append(show(e.getValue()));
            }
            return s.append('}').toString();
        }
        if (o instanceof List) {
            List<String> items = new ArrayList<>();
            for (Object i : (List<?>) o) {
                items.add(show(i));
            }
            return items.toString();
        }
        return String.valueOf(o);
    }

    /**
     * The JSON of the golden file, as Wire's decoder gives values: objects as LinkedHashMap,
     * integers as Long, {"$bin": hex} as byte[]. (No fractions: frames carry none.)
     */
    private static final class Json {
        private final String s;
        private int i;

        Json(String s) {
            this.s = s;
        }

        Object document() {
            Object v = value();
            space();
            if (i != s.length()) {
                throw error("trailing text");
            }
            return v;
        }

        private Object value() {
            space();
            char c = s.charAt(i);
            if (c == '{') {
                return object();
            }
            if (c == '[') {
                return array();
            }
            if (c == '"') {
                return string();
            }
            if (s.startsWith("true", i)) {
                i += 4;
                return Boolean.TRUE;
            }
            if (s.startsWith("false", i)) {
                i += 5;
                return Boolean.FALSE;
            }
            if (s.startsWith("null", i)) {
                i += 4;
                return null;
            }
            int start = i;
            if (c == '-') {
                i++;
            }
            while (i < s.length() && Character.isDigit(s.charAt(i))) {
                i++;
            }
            if (start == i || (i < s.length() && ".eE".indexOf(s.charAt(i)) >= 0)) {
                throw error("an integer");
            }
            return Long.parseLong(s.substring(start, i));
        }

        private Object object() {
            Map<String, Object> map = new LinkedHashMap<>();
            i++;
            space();
            if (s.charAt(i) == '}') {
                i++;
                return map;
            }
            while (true) {
                space();
                String key = string();
                space();
                expect(':');
                map.put(key, value());
                space();
                if (s.charAt(i) == ',') {
                    i++;
                    continue;
                }
                expect('}');
                break;
            }
            if (map.size() == 1 && map.get("$bin") instanceof String) {
                return HexFormat.of().parseHex((String) map.get("$bin"));
            }
            return map;
        }

        private List<Object> array() {
            List<Object> list = new ArrayList<>();
            i++;
            space();
            if (s.charAt(i) == ']') {
                i++;
                return list;
            }
            while (true) {
                list.add(value());
                space();
                if (s.charAt(i) == ',') {
                    i++;
                    continue;
                }
                expect(']');
                return list;
            }
        }

        private String string() {
            expect('"');
            StringBuilder out = new StringBuilder();
            while (true) {
                char c = s.charAt(i++);
                if (c == '"') {
                    return out.toString();
                }
                if (c != '\\') {
                    out.append(c);
                    continue;
                }
                char e = s.charAt(i++);
                switch (e) {
                    case '"', '\\', '/' -> out.append(e);
                    case 'b' -> out.append('\b');
                    case 'f' -> out.append('\f');
                    case 'n' -> out.append('\n');
                    case 'r' -> out.append('\r');
                    case 't' -> out.append('\t');
                    case 'u' -> {
                        out.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        i += 4;
                    }
                    default -> throw error("an escape");
                }
            }
        }

        private void space() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
        }

        private void expect(char c) {
            if (i >= s.length() || s.charAt(i) != c) {
                throw error("'" + c + "'");
            }
            i++;
        }

        private IllegalArgumentException error(String expected) {
            return new IllegalArgumentException("golden JSON: expected " + expected + " at offset " + i);
        }
    }
}
