// The private channel (runtimes/README.md): frames of a 4-byte big-endian length and a
// MessagePack body {type: {fields}}. A MessagePack codec for the types frames carry
// (nil, bool, int, float, str, bin, array, map; ext is skipped), written here so that
// the bootstrap needs nothing but the JDK and Jackson.
package natsfn.runtime;

import java.io.EOFException;
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

final class Wire {
    /** 64 MiB + 64 KiB, from the contract. */
    static final int MAX_FRAME = 67_174_400;

    private final InputStream in;
    private final OutputStream out;
    private final byte[] head = new byte[4];

    Wire(InputStream in, OutputStream out) {
        this.in = in;
        this.out = out;
    }

    /**
     * The channel on the inherited descriptor NATSFN_CHANNEL_FD. Java has no public way to
     * adopt a descriptor number, so a FileDescriptor is given it by reflection (the JVM is
     * started with java.io opened for this).
     */
    static Wire open(int fd) throws ReflectiveOperationException {
        FileDescriptor descriptor = new FileDescriptor();
        Field field = FileDescriptor.class.getDeclaredField("fd");
        field.setAccessible(true);
        field.setInt(descriptor, fd);
        return new Wire(new FileInputStream(descriptor), new FileOutputStream(descriptor));
    }

    static final class Frame {
        final String type;
        final Map<String, Object> fields;

        Frame(String type, Map<String, Object> fields) {
            this.type = type;
            this.fields = fields;
        }
    }

    /** The next frame, or null at end of file. */
    Frame read() throws IOException {
        if (!readFully(head, true)) {
            return null;
        }
        int len = ((head[0] & 0xff) << 24) | ((head[1] & 0xff) << 16) | ((head[2] & 0xff) << 8) | (head[3] & 0xff);
        if (len < 0 || len > MAX_FRAME) {
            throw new IOException("frame of " + Integer.toUnsignedString(len) + " bytes exceeds the limit");
        }
        byte[] body = new byte[len];
        readFully(body, false);
        Decoder d = new Decoder(body);
        Object value = d.value();
        if (d.pos != body.length) {
            throw new IOException("trailing bytes after a frame body");
        }
        if (!(value instanceof Map) || ((Map<?, ?>) value).size() != 1) {
            throw new IOException("a frame body is a one-entry map");
        }
        Map.Entry<?, ?> entry = ((Map<?, ?>) value).entrySet().iterator().next();
        Object fields = entry.getValue();
        @SuppressWarnings("unchecked")
        Map<String, Object> map = fields instanceof Map ? (Map<String, Object>) fields : new LinkedHashMap<>();
        return new Frame(String.valueOf(entry.getKey()), map);
    }

    private boolean readFully(byte[] buf, boolean eofOk) throws IOException {
        int n = 0;
        while (n < buf.length) {
            int r = in.read(buf, n, buf.length - n);
            if (r < 0) {
                if (eofOk && n == 0) {
                    return false;
                }
                throw new EOFException("channel closed inside a frame");
            }
            n += r;
        }
        return true;
    }

    /** Writes {type: fields} as one frame (one write call). */
    void write(String type, Map<String, Object> fields) throws IOException {
        Encoder e = new Encoder();
        e.mapHeader(1);
        e.str(type);
        e.value(fields);
        int len = e.size - 4;
        if (len > MAX_FRAME) {
            throw new FrameTooLarge();
        }
        byte[] buf = e.buf;
        buf[0] = (byte) (len >>> 24);
        buf[1] = (byte) (len >>> 16);
        buf[2] = (byte) (len >>> 8);
        buf[3] = (byte) len;
        out.write(buf, 0, e.size);
    }

    static final class FrameTooLarge extends IOException {
        private static final long serialVersionUID = 1L;
    }

    /** A growing buffer with room for the length prefix at its start. */
    static final class Encoder {
        byte[] buf = new byte[256];
        int size = 4;

        private void ensure(int more) {
            if (size + more > buf.length) {
                long want = Math.max((long) buf.length * 2, (long) size + more);
                buf = java.util.Arrays.copyOf(buf, (int) Math.min(want, Integer.MAX_VALUE - 8));
            }
        }

        private void b(int v) {
            ensure(1);
            buf[size++] = (byte) v;
        }

        private void be(long v, int bytes) {
            ensure(bytes);
            for (int i = bytes - 1; i >= 0; i--) {
                buf[size++] = (byte) (v >>> (8 * i));
            }
        }

        private void raw(byte[] data) {
            ensure(data.length);
            System.arraycopy(data, 0, buf, size, data.length);
            size += data.length;
        }

        void mapHeader(int n) {
            if (n < 16) {
                b(0x80 | n);
            } else if (n < 0x10000) {
                b(0xde);
                be(n, 2);
            } else {
                b(0xdf);
                be(n, 4);
            }
        }

        void str(String s) {
            byte[] data = s.getBytes(StandardCharsets.UTF_8);
            int n = data.length;
            if (n < 32) {
                b(0xa0 | n);
            } else if (n < 0x100) {
                b(0xd9);
                be(n, 1);
            } else if (n < 0x10000) {
                b(0xda);
                be(n, 2);
            } else {
                b(0xdb);
                be(n, 4);
            }
            raw(data);
        }

        void bin(byte[] data) {
            int n = data.length;
            if (n < 0x100) {
                b(0xc4);
                be(n, 1);
            } else if (n < 0x10000) {
                b(0xc5);
                be(n, 2);
            } else {
                b(0xc6);
                be(n, 4);
            }
            raw(data);
        }

        void uint(long v) {
            if (v >= 0 && v < 0x80) {
                b((int) v);
            } else if (v >= 0 && v < 0x100) {
                b(0xcc);
                be(v, 1);
            } else if (v >= 0 && v < 0x10000) {
                b(0xcd);
                be(v, 2);
            } else if (v >= 0 && v < 0x100000000L) {
                b(0xce);
                be(v, 4);
            } else if (v >= 0) {
                b(0xcf);
                be(v, 8);
            } else {
                b(0xd3);
                be(v, 8);
            }
        }

        void value(Object o) {
            if (o == null) {
                b(0xc0);
            } else if (o instanceof String) {
                str((String) o);
            } else if (o instanceof byte[]) {
                bin((byte[]) o);
            } else if (o instanceof Boolean) {
                b((Boolean) o ? 0xc3 : 0xc2);
            } else if (o instanceof Number) {
                uint(((Number) o).longValue());
            } else if (o instanceof Map) {
                Map<?, ?> m = (Map<?, ?>) o;
                mapHeader(m.size());
                for (Map.Entry<?, ?> e : m.entrySet()) {
                    str(String.valueOf(e.getKey()));
                    value(e.getValue());
                }
            } else if (o instanceof List) {
                List<?> l = (List<?>) o;
                int n = l.size();
                if (n < 16) {
                    b(0x90 | n);
                } else if (n < 0x10000) {
                    b(0xdc);
                    be(n, 2);
                } else {
                    b(0xdd);
                    be(n, 4);
                }
                for (Object v : l) {
                    value(v);
                }
            } else {
                str(o.toString());
            }
        }
    }

    static final class Decoder {
        private final byte[] data;
        int pos;

        Decoder(byte[] data) {
            this.data = data;
        }

        private int u8() throws IOException {
            if (pos >= data.length) {
                throw new IOException("truncated MessagePack data");
            }
            return data[pos++] & 0xff;
        }

        private long be(int bytes) throws IOException {
            long v = 0;
            for (int i = 0; i < bytes; i++) {
                v = (v << 8) | u8();
            }
            return v;
        }

        private int length(int bytes) throws IOException {
            long n = be(bytes);
            if (n > data.length - pos) {
                throw new IOException("truncated MessagePack data");
            }
            return (int) n;
        }

        private String str(int n) throws IOException {
            String s = new String(data, pos, n, StandardCharsets.UTF_8);
            pos += n;
            return s;
        }

        private byte[] bin(int n) {
            byte[] b = java.util.Arrays.copyOfRange(data, pos, pos + n);
            pos += n;
            return b;
        }

        Object value() throws IOException {
            int b = u8();
            if (b < 0x80) {
                return (long) b;
            }
            if (b < 0x90) {
                return map(b & 0x0f);
            }
            if (b < 0xa0) {
                return array(b & 0x0f);
            }
            if (b < 0xc0) {
                return str(length0(b & 0x1f));
            }
            if (b >= 0xe0) {
                return (long) (b - 0x100);
            }
            switch (b) {
                case 0xc0:
                    return null;
                case 0xc2:
                    return Boolean.FALSE;
                case 0xc3:
                    return Boolean.TRUE;
                case 0xc4:
                    return bin(length(1));
                case 0xc5:
                    return bin(length(2));
                case 0xc6:
                    return bin(length(4));
                case 0xc7:
                    return ext(length(1));
                case 0xc8:
                    return ext(length(2));
                case 0xc9:
                    return ext(length(4));
                case 0xca:
                    return (double) Float.intBitsToFloat((int) be(4));
                case 0xcb:
                    return Double.longBitsToDouble(be(8));
                case 0xcc:
                    return be(1);
                case 0xcd:
                    return be(2);
                case 0xce:
                    return be(4);
                case 0xcf:
                    return be(8);
                case 0xd0:
                    return (long) (byte) be(1);
                case 0xd1:
                    return (long) (short) be(2);
                case 0xd2:
                    return (long) (int) be(4);
                case 0xd3:
                    return be(8);
                case 0xd4:
                case 0xd5:
                case 0xd6:
                case 0xd7:
                case 0xd8:
                    return ext(1 << (b - 0xd4));
                case 0xd9:
                    return str(length(1));
                case 0xda:
                    return str(length(2));
                case 0xdb:
                    return str(length(4));
                case 0xdc:
                    return array((int) be(2));
                case 0xdd:
                    return array((int) be(4));
                case 0xde:
                    return map((int) be(2));
                case 0xdf:
                    return map((int) be(4));
                default:
                    throw new IOException("invalid MessagePack type byte 0x" + Integer.toHexString(b));
            }
        }

        private int length0(int n) throws IOException {
            if (n > data.length - pos) {
                throw new IOException("truncated MessagePack data");
            }
            return n;
        }

        /** Ext values are not used by the channel: skipped (type byte and data). */
        private Object ext(int n) throws IOException {
            u8();
            pos += length0(n);
            return null;
        }

        private List<Object> array(int n) throws IOException {
            List<Object> list = new ArrayList<>(Math.min(n, 1024));
            for (int i = 0; i < n; i++) {
                list.add(value());
            }
            return list;
        }

        private Map<String, Object> map(int n) throws IOException {
            Map<String, Object> map = new LinkedHashMap<>();
            for (int i = 0; i < n; i++) {
                map.put(String.valueOf(value()), value());
            }
            return map;
        }
    }
}
