// sequelize-cli's configuration, the same in every NODE_ENV: the database from
// DATABASE_URL, the migrations table as Sequelize's migrationStorageTableName.
const config = {
  use_env_variable: "DATABASE_URL",
  dialect: "postgres",
  migrationStorageTableName: process.env.MIGRATIONS_TABLE || "SequelizeMeta",
  logging: false,
};

module.exports = { production: config, development: config, test: config };
