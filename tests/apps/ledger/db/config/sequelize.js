// Migrations are logged in "migrations_log", not Sequelize's default table.
const settings = { use_env_variable: "DATABASE_URL", dialect: "postgres", logging: false,
                   migrationStorageTableName: "migrations_log" };
module.exports = { production: settings, development: settings };
