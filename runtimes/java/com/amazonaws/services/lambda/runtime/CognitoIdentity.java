// natsfn's own copy of aws-lambda-java-core's interface (same names and signatures).
package com.amazonaws.services.lambda.runtime;

public interface CognitoIdentity {
    String getIdentityId();

    String getIdentityPoolId();
}
