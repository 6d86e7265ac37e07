"""Operations: configuration, brokers, Ray, pipeline deployment, client, CLI."""
