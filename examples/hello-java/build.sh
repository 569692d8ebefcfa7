#!/bin/sh
# Compiles example/Hello.java next to itself, against natsfn's own copy of the
# aws-lambda-java-core interfaces (runtimes/java): only javac (JDK 17+) is needed.
# The code directory is then this directory: example/Hello.class is the handler's class.
# A function built with Maven/Gradle against the real aws-lambda-java-core works the
# same way: put its jar (and its dependencies) in a code directory's lib/.
set -eu
cd "$(dirname "$0")"
javac --release 17 -implicit:none -sourcepath ../../runtimes/java -d . example/Hello.java
echo "built $(pwd)/example/Hello.class"
